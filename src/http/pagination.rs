//! Page-number pagination, as Django REST framework's `PageNumberPagination` answers it:
//! `?page=N&page_size=M` (page from 1, the size capped as DRF caps it), the body
//! [`Paginated`] (`count`, absolute `next`/`previous` links that keep the other query
//! parameters, `results`), and 404 `Invalid page.` for a page past the end. Every page-numbered
//! list pages through here (the caller's conversations, the admin's users), so they page the
//! same way. A conversation's history pages by message id instead (`before`/`after`,
//! [`super::messages`]), its size capped by the same rule ([`page_size`]).

use hyper::StatusCode;
use serde::Serialize;

use super::extract::{Count, Link};
use crate::error::{ApiError, HttpResponse, json_response};
use crate::views::Paginated;

/// The size of a page as asked (`default` when not given), capped at `max` as Django REST
/// framework caps `page_size`: every list's page size or `limit` follows this rule.
pub fn page_size(asked: Option<Count>, default: usize, max: usize) -> usize {
    asked.map_or(default, |c| c.0.min(max))
}

/// The page a list request asked for.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    /// From 1.
    page: usize,
    /// Items per page, from 1.
    size: usize,
}

impl PageRequest {
    /// Page `page` (1 when not given) of `size` items (`default` when not given, at most `max`).
    pub fn new(page: Option<Count>, size: Option<Count>, default: usize, max: usize) -> Self {
        Self {
            page: page.map_or(1, |c| c.0),
            size: page_size(size, default, max),
        }
    }

    /// Items before this page.
    pub fn skip(self) -> usize {
        (self.page - 1).saturating_mul(self.size)
    }

    /// Items on a full page.
    pub fn size(self) -> usize {
        self.size
    }

    /// The answer: `results`, this page of a list of `count` items, with links to the pages
    /// beside it (this request's URL with another `page`); 404 past the end (page 1 always
    /// exists).
    pub fn answer<T: Serialize>(
        self,
        count: u64,
        results: Vec<T>,
        link: &Link,
    ) -> Result<HttpResponse, ApiError> {
        let body = Paginated::page(self.page, self.size, count, results, |p| {
            link.with(&[("page", Some(p.to_string()))])
        })
        .ok_or(ApiError::NotFound("Invalid page."))?;
        Ok(json_response(StatusCode::OK, &body))
    }
}
