// The demo chat: local accounts, the conversation list, one open conversation — all over the
// daemon's public API: REST for accounts, lists and history, `/ws/chat/` (seed 002's dialect,
// docs/WEBSOCKET.md) for everything live.
//
// Tokens live in sessionStorage. Memory alone would sign the user out on every reload, which
// is exactly when a chat must catch up; localStorage is shared by every tab of the origin,
// so two tabs could not be two users (the demo's whole point) and a token would outlive the
// tab. sessionStorage is per tab and dies with it. Script injection, the way a token in
// storage is usually stolen, is what the page's Content-Security-Policy shuts out: no inline
// code, no eval, Trusted Types (no string ever becomes markup here).
//
// Delivery: the socket replays the user's queue on connect, then `sync` asks for every message
// after the newest one this tab has seen — the messages another tab of the same user took off
// the queue while this one was away. Both can bring the same message: every message is kept
// by id, so a duplicate changes nothing. A dropped socket is reopened with exponential backoff
// (0.5 s doubling to 30 s, with jitter).

import { ApiError, request, h, replaceChildren, formatTime } from "/assets/common/api.js";

const SESSION_KEY = "indaba.demo.session";
/** Conversations joined for presence events; the socket's frame budget is 60 at once. */
const JOIN_LIMIT = 40;
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 30_000;
/** A typing start is repeated this often while typing goes on (the server relays 1/s at most). */
const TYPING_REPEAT_MS = 2500;
/** The server's throttle of typing starts (one per second), with a margin. */
const TYPING_THROTTLE_MS = 1100;
/** No key for this long: typing stopped. */
const TYPING_IDLE_MS = 3000;
/** Someone's "typing…" disappears after this long without news (a lost stop). */
const TYPING_SHOW_MS = 6000;
const HISTORY_PAGE = 50;
const MAX_TEXT_BYTES = 16384;

const $ = (id) => document.getElementById(id);
const el = {
  app: $("app"),
  account: $("account"),
  meName: $("me-name"),
  connectionDot: $("connection-dot"),
  connectionText: $("connection-text"),
  signOut: $("sign-out"),
  banner: $("banner"),
  authView: $("auth-view"),
  authTitle: $("auth-title"),
  authForm: $("auth-form"),
  authUsername: $("auth-username"),
  authDisplayName: $("auth-display-name"),
  displayNameField: $("display-name-field"),
  authPassword: $("auth-password"),
  passwordHint: $("password-hint"),
  authError: $("auth-error"),
  authSubmit: $("auth-submit"),
  authSwitch: $("auth-switch"),
  authSwitchText: $("auth-switch-text"),
  chatView: $("chat-view"),
  newForm: $("new-conversation"),
  newUsername: $("new-username"),
  newError: $("new-error"),
  list: $("conversation-list"),
  listEmpty: $("list-empty"),
  placeholder: $("placeholder"),
  thread: $("thread"),
  back: $("back"),
  peerName: $("peer-name"),
  peerDot: $("peer-dot"),
  peerPresence: $("peer-presence"),
  messages: $("messages"),
  typing: $("typing"),
  composer: $("composer"),
  composerInput: $("composer-input"),
  composerError: $("composer-error"),
};

// ---------------------------------------------------------------------------------------------
// State

/** {access, refresh, lastMessageId} of the signed-in tab, mirrored in sessionStorage. */
let auth = null;
/** {id, username, display_name} of the signed-in user. */
let me = null;
/** User id → {username, display_name}. */
const users = new Map();
/** Conversation id → see newConversation(). */
const conversations = new Map();
/** User id → {online, last_seen}. */
const presence = new Map();
/** The open conversation's id, or null. */
let current = null;
/** The socket, once opened; `ready` after its connection_established. */
let socket = null;
let ready = false;
/** Conversations joined on this socket. */
let joined = new Set();
let reconnectAttempt = 0;
let reconnectTimer = null;
/** Sends waiting for their message_sent: client_id → {conversation, text, li}. */
const pending = new Map();
/** Events are handled one after another, including those that must fetch first. */
let eventChain = Promise.resolve();
let typingSentAt = 0;
let typingConversation = null;
let typingIdleTimer = null;
let typingRetryTimer = null;
/** When this tab last sent a typing start (any conversation). */
let lastTypingStart = 0;
let refreshTimer = null;
let authMode = "signin";

function saveAuth() {
  if (auth) sessionStorage.setItem(SESSION_KEY, JSON.stringify(auth));
}

function loadAuth() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY));
    if (saved && typeof saved.access === "string" && typeof saved.refresh === "string") {
      return { access: saved.access, refresh: saved.refresh, lastMessageId: Number(saved.lastMessageId) || 0 };
    }
  } catch {
    // Unreadable: start signed out.
  }
  return null;
}

function newConversation(id) {
  return {
    id,
    participants: [],
    peer: null,
    unread: 0,
    /** The newest message, for the list's preview. */
    last: null,
    /** Last activity (ms), for the list's order. */
    updated: 0,
    /** Message id → message; only what this tab has seen. */
    messages: new Map(),
    historyLoaded: false,
    /** Oldest id loaded from history, when older pages remain. */
    olderBefore: null,
    /** Highest message id counted (in unread_count or here): a replayed one is not counted twice. */
    newestId: 0,
    /** Highest of my messages the other side has read. */
    readUpTo: 0,
    /** Highest id this tab reported read. */
    readSent: 0,
    /** Who is typing, and the timer that forgets it. */
    typing: null,
    typingTimer: null,
  };
}

// ---------------------------------------------------------------------------------------------
// API calls with the session's token, refreshed once on a 401

let refreshing = null;

async function api(path, options = {}) {
  try {
    return await request(path, { ...options, token: auth?.access });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401 && auth && (await refreshAccess())) {
      return request(path, { ...options, token: auth.access });
    }
    if (isDisabled(e) && auth) endSession(DISABLED);
    throw e;
  }
}

/** What the page says when an operator disabled the account (PROTOCOL.md section 9). */
const DISABLED = "Your session has ended: this account has been disabled by an operator.";

/** A refusal because an operator disabled the account: 403 `user_disabled`. */
function isDisabled(e) {
  return e instanceof ApiError && e.status === 403 && e.code === "user_disabled";
}

/** A new access token from the refresh token; false (and signed out) when that is refused. */
function refreshAccess() {
  if (!refreshing) {
    refreshing = (async () => {
      try {
        const answer = await request("/api/v1/auth/token/refresh/", {
          method: "POST",
          body: { refresh: auth.refresh },
        });
        auth.access = answer.access;
        saveAuth();
        return true;
      } catch (e) {
        if (isDisabled(e)) {
          endSession(DISABLED);
        } else if (e instanceof ApiError && e.status !== 0 && e.status < 500) {
          endSession("Your session has ended. Please sign in again.");
        }
        return false;
      } finally {
        refreshing = null;
      }
    })();
  }
  return refreshing;
}

// ---------------------------------------------------------------------------------------------
// Signing in and out

function setAuthMode(mode) {
  authMode = mode;
  const register = mode === "register";
  el.authTitle.textContent = register ? "Create an account" : "Sign in";
  el.authSubmit.textContent = register ? "Create account" : "Sign in";
  el.displayNameField.hidden = !register;
  el.authPassword.autocomplete = register ? "new-password" : "current-password";
  // The length rule matters when choosing a password, not when typing one's own.
  el.passwordHint.hidden = !register;
  if (register) el.authPassword.setAttribute("aria-describedby", "password-hint");
  else el.authPassword.removeAttribute("aria-describedby");
  el.authSwitchText.textContent = register ? "Already have an account?" : "New here?";
  el.authSwitch.textContent = register ? "Sign in instead" : "Create an account";
  el.authError.textContent = "";
}

async function onAuthSubmit(event) {
  event.preventDefault();
  el.authError.textContent = "";
  const username = el.authUsername.value.trim();
  const password = el.authPassword.value;
  if (!username) {
    el.authError.textContent = "Enter a username.";
    el.authUsername.focus();
    return;
  }
  if (authMode === "register" && password.length < 8) {
    el.authError.textContent = "The password needs at least 8 characters.";
    el.authPassword.focus();
    return;
  }
  if (!password) {
    el.authError.textContent = "Enter your password.";
    el.authPassword.focus();
    return;
  }
  el.authSubmit.disabled = true;
  try {
    if (authMode === "register") {
      const display_name = el.authDisplayName.value.trim() || undefined;
      await request("/api/v1/auth/register/", {
        method: "POST",
        body: { username, password, display_name },
      });
    }
    const tokens = await request("/api/v1/auth/token/", {
      method: "POST",
      body: { username, password },
    });
    auth = { access: tokens.access, refresh: tokens.refresh, lastMessageId: 0 };
    saveAuth();
    el.authPassword.value = "";
    await startChat();
  } catch (e) {
    el.authError.textContent = authErrorText(e);
    el.authUsername.focus();
  } finally {
    el.authSubmit.disabled = false;
  }
}

function authErrorText(e) {
  if (!(e instanceof ApiError)) return "Something went wrong. Please try again.";
  switch (e.code) {
    case "invalid_credentials":
      return "Wrong username or password.";
    case "username_taken":
      return "That username is taken. Pick another, or sign in.";
    case "rate_limited":
      return "Too many attempts. Wait a little and try again.";
    default:
      return e.detail;
  }
}

function showAuth(message = "") {
  el.chatView.hidden = true;
  el.account.hidden = true;
  el.authView.hidden = false;
  setBanner("");
  el.authError.textContent = message;
  document.title = "Indaba demo chat";
  el.authUsername.focus();
}

function signOut() {
  endSession("");
}

/** Back to the sign-in form: socket closed, tokens and everything shown forgotten. */
function endSession(message) {
  const ws = socket;
  socket = null;
  ready = false;
  if (ws) ws.close(1000);
  clearTimeout(reconnectTimer);
  clearTimeout(refreshTimer);
  sessionStorage.removeItem(SESSION_KEY);
  auth = null;
  me = null;
  current = null;
  users.clear();
  conversations.clear();
  presence.clear();
  pending.clear();
  listItems.clear();
  el.list.replaceChildren();
  el.messages.replaceChildren();
  showAuth(message);
}

/** After sign-in or a reload with a live session: who am I, my conversations, the socket. */
async function startChat() {
  me = await api("/api/v1/auth/me/");
  users.set(me.id, me);
  el.meName.textContent = nameOf(me.id);
  el.authView.hidden = true;
  el.chatView.hidden = false;
  el.account.hidden = false;
  closeConversation();
  conversations.clear();
  listItems.clear();
  el.list.replaceChildren();
  await loadConversations({ first: true });
  connect();
  el.newUsername.focus();
}

async function boot() {
  setAuthMode("signin");
  auth = loadAuth();
  if (!auth) {
    showAuth();
    return;
  }
  try {
    await startChat();
  } catch (e) {
    if (!auth) return; // the refresh failed and signed out already
    if (e instanceof ApiError && e.status === 401) {
      endSession("Your session has ended. Please sign in again.");
    } else {
      setBanner("The server cannot be reached. Trying again…");
      setTimeout(boot, 3000);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Users and conversations over REST

function nameOf(id) {
  const user = users.get(id);
  return user?.display_name || user?.username || `User ${id}`;
}

async function fetchUser(id) {
  if (users.has(id)) return;
  try {
    users.set(id, await api(`/api/v1/auth/users/${id}/`));
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) users.set(id, { id, username: null });
    else throw e;
  }
}

/**
 * Takes a conversation as REST shows it. `first`: the list a session starts with, when no
 * history is loaded yet, so the REST state covers every message up to the newest shown: the
 * next `sync` can start after it. A later list must not move that mark: a message it shows as
 * a preview may not have reached an open conversation yet (the socket may be down), and
 * only `sync` would bring it.
 */
function upsertConversation(json, { first = false } = {}) {
  let conv = conversations.get(json.id);
  if (!conv) {
    conv = newConversation(json.id);
    conversations.set(json.id, conv);
  }
  conv.participants = json.participants;
  conv.peer = json.participants.find((p) => p !== me.id) ?? me.id;
  conv.unread = isReading(conv) ? 0 : json.unread_count;
  conv.updated = Math.max(conv.updated, Date.parse(json.updated_at) || 0);
  if (json.last_message) {
    const last = fromRest(json.last_message);
    if (!conv.last || last.id >= conv.last.id) conv.last = last;
    // Counted in unread_count: the same message replayed later is not counted again.
    conv.newestId = Math.max(conv.newestId, last.id);
    if (first) auth.lastMessageId = Math.max(auth.lastMessageId, last.id);
  }
  return conv;
}

async function loadConversations({ first = false } = {}) {
  const page = await api("/api/v1/messaging/conversations/?page_size=100");
  for (const json of page.results) upsertConversation(json, { first });
  saveAuth();
  await Promise.all([...conversations.values()].map((c) => fetchUser(c.peer)));
  renderList();
  if (current !== null) renderThreadHeader();
  joinAll();
}

/** The REST list again (authoritative unread counts), soon, once for a burst of reasons. */
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    if (auth) loadConversations().catch(reportLater);
  }, 150);
}

/** A conversation an event names that the list does not have yet (someone started it). */
async function ensureConversation(id) {
  if (conversations.has(id)) return conversations.get(id);
  try {
    const conv = upsertConversation(await api(`/api/v1/messaging/conversations/${id}/`));
    await fetchUser(conv.peer);
    joinAll();
    return conv;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

async function onNewConversation(event) {
  event.preventDefault();
  el.newError.textContent = "";
  const username = el.newUsername.value.trim();
  if (!username) {
    el.newError.textContent = "Enter the username of the person to talk to.";
    el.newUsername.focus();
    return;
  }
  try {
    let user;
    try {
      user = await api(`/api/v1/auth/users/?username=${encodeURIComponent(username)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        el.newError.textContent = `No user is called “${username}”.`;
        el.newUsername.focus();
        return;
      }
      throw e;
    }
    if (user.id === me.id) {
      el.newError.textContent = "That is you. Pick someone else.";
      el.newUsername.focus();
      return;
    }
    users.set(user.id, user);
    const conv = upsertConversation(
      await api("/api/v1/messaging/conversations/", {
        method: "POST",
        body: { participants: [me.id, user.id] },
      }),
    );
    el.newUsername.value = "";
    joinAll();
    renderList();
    await openConversation(conv.id);
  } catch (e) {
    el.newError.textContent = e instanceof ApiError ? e.detail : "Something went wrong.";
  }
}

// ---------------------------------------------------------------------------------------------
// Messages

function fromRest(m) {
  return {
    id: m.id,
    conversation: m.conversation,
    sender: m.sender,
    text: m.text,
    created_at: m.created_at,
    is_read: m.is_read,
  };
}

function fromSocket(ev) {
  return {
    id: ev.message_id,
    conversation: ev.conversation_id,
    sender: ev.sender_id,
    text: ev.text,
    created_at: ev.created_at,
    is_read: false,
  };
}

/** The one place a message enters: from history, the socket, or our own send. */
function addMessage(conv, msg, { counts }) {
  const isNew = !conv.messages.has(msg.id);
  conv.messages.set(msg.id, msg);
  if (!conv.last || msg.id >= conv.last.id) {
    conv.last = msg;
    conv.updated = Math.max(conv.updated, Date.parse(msg.created_at) || 0);
  }
  if (msg.sender === me.id && msg.is_read) conv.readUpTo = Math.max(conv.readUpTo, msg.id);
  if (counts && isNew && msg.sender !== me.id && msg.id > conv.newestId) {
    if (isReading(conv)) markRead(conv);
    else conv.unread += 1;
  }
  conv.newestId = Math.max(conv.newestId, msg.id);
  if (counts) {
    auth.lastMessageId = Math.max(auth.lastMessageId, msg.id);
    saveAuth();
  }
  if (conv.typing === msg.sender) setTyping(conv, null);
  if (isNew && conv.id === current) insertMessage(msg);
}

async function onNewMessage(ev) {
  const conv = await ensureConversation(ev.conversation_id);
  if (!conv) return;
  addMessage(conv, fromSocket(ev), { counts: true });
  renderList();
}

/** Is the user looking at this conversation right now? */
function isReading(conv) {
  return conv.id === current && document.visibilityState === "visible";
}

/** Tells the server the newest message from the other side has been read. */
function markRead(conv) {
  conv.unread = 0;
  let newest = 0;
  for (const m of conv.messages.values()) if (m.sender !== me.id && m.id > newest) newest = m.id;
  if (conv.last && conv.last.sender !== me.id) newest = Math.max(newest, conv.last.id);
  if (newest <= conv.readSent) return;
  conv.readSent = newest;
  if (!sendFrame({ type: "read_receipt", message_ids: [newest] })) {
    api(`/api/v1/messaging/messages/${newest}/mark_as_read/`, { method: "POST" }).catch(reportLater);
  }
}

async function loadHistory(conv, before = null) {
  const query = before ? `&before=${before}` : "";
  const page = await api(
    `/api/v1/messaging/messages/?conversation=${conv.id}&limit=${HISTORY_PAGE}${query}`,
  );
  for (const json of page.results) addMessage(conv, fromRest(json), { counts: false });
  conv.olderBefore = page.next && page.results.length ? page.results[0].id : null;
  conv.historyLoaded = true;
}

function randomId() {
  // crypto.randomUUID needs a secure context; a LAN address over plain HTTP is not one.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function onComposerSubmit(event) {
  event.preventDefault();
  el.composerError.textContent = "";
  const text = el.composerInput.value.trim();
  if (!text || current === null) return;
  if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
    el.composerError.textContent = "That message is too long.";
    return;
  }
  stopTyping();
  const clientId = randomId();
  const msg = { id: null, conversation: current, sender: me.id, text, created_at: new Date().toISOString() };
  const li = messageItem(msg, "sending");
  li.dataset.clientId = clientId;
  el.messages.append(li);
  scrollToEnd();
  pending.set(clientId, { conversation: current, text, li });
  el.composerInput.value = "";
  sizeComposer();
  sendPending(clientId);
}

/** Sends (or sends again: the client_id makes it idempotent) a message awaiting its ack. */
function sendPending(clientId) {
  const p = pending.get(clientId);
  if (!p) return;
  sendFrame({ type: "chat_message", conversation_id: p.conversation, text: p.text, client_id: clientId });
  // Not sent now: the socket is down, and connection_established sends it again.
}

function onMessageSent(ev) {
  const p = pending.get(ev.client_id);
  if (!p) return;
  pending.delete(ev.client_id);
  const conv = conversations.get(ev.conversation_id);
  if (!conv) return;
  const msg = {
    id: ev.message_id,
    conversation: ev.conversation_id,
    sender: me.id,
    text: p.text,
    created_at: ev.created_at,
    is_read: false,
  };
  // Already here when a sync brought it first; else it takes the pending item's place.
  p.li.remove();
  addMessage(conv, msg, { counts: true });
  renderList();
}

function onServerError(ev) {
  const p = ev.ref ? pending.get(ev.ref) : null;
  if (p) {
    pending.delete(ev.ref);
    p.li.classList.add("failed");
    setReceipt(p.li, "failed");
    el.composerError.textContent = `Not sent: ${ev.detail}`;
  } else if (ev.code === "rate_limited") {
    el.composerError.textContent = "Slow down a little.";
  }
}

function onReadReceipt(ev) {
  const conv = conversations.get(ev.conversation_id);
  if (!conv || ev.reader_id === me.id) return;
  conv.readUpTo = Math.max(conv.readUpTo, ...ev.message_ids);
  if (conv.id === current) updateReceipts(conv);
}

// ---------------------------------------------------------------------------------------------
// Typing

function onComposerInput() {
  sizeComposer();
  if (current === null) return;
  const now = Date.now();
  if (el.composerInput.value.trim() && (typingConversation !== current || now - typingSentAt > TYPING_REPEAT_MS)) {
    if (typingConversation !== null && typingConversation !== current) stopTyping();
    startTyping(current);
  }
  clearTimeout(typingIdleTimer);
  typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

/** Says "typing" in `conversation` — later if the server would drop it now: it relays one
 * start per second per user and conversation, and a stop does not reset that. */
function startTyping(conversation) {
  clearTimeout(typingRetryTimer);
  typingConversation = conversation;
  typingSentAt = Date.now();
  const wait = lastTypingStart + TYPING_THROTTLE_MS - typingSentAt;
  if (wait > 0) {
    typingRetryTimer = setTimeout(() => {
      if (typingConversation === conversation) startTyping(conversation);
    }, wait);
    return;
  }
  if (sendFrame({ type: "typing_indicator", conversation_id: conversation, is_typing: true })) {
    lastTypingStart = typingSentAt;
  }
}

function stopTyping() {
  clearTimeout(typingIdleTimer);
  clearTimeout(typingRetryTimer);
  if (typingConversation === null) return;
  sendFrame({ type: "typing_indicator", conversation_id: typingConversation, is_typing: false });
  typingConversation = null;
  typingSentAt = 0;
}

async function onTyping(ev) {
  if (ev.user_id === me.id) return;
  const conv = await ensureConversation(ev.conversation_id);
  if (conv) setTyping(conv, ev.is_typing ? ev.user_id : null);
}

function setTyping(conv, userId) {
  clearTimeout(conv.typingTimer);
  conv.typing = userId;
  if (userId !== null) conv.typingTimer = setTimeout(() => setTyping(conv, null), TYPING_SHOW_MS);
  if (conv.id === current) el.typing.textContent = userId !== null ? `${nameOf(userId)} is typing…` : "";
  renderList();
}

// ---------------------------------------------------------------------------------------------
// The socket

function connect() {
  if (!auth) return;
  clearTimeout(reconnectTimer);
  setConnection(reconnectAttempt ? "reconnecting" : "connecting");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws/chat/?token=${encodeURIComponent(auth.access)}`);
  socket = ws;
  ready = false;
  joined = new Set();
  ws.addEventListener("message", (e) => {
    if (socket !== ws) return;
    let ev;
    try {
      ev = JSON.parse(e.data);
    } catch {
      return;
    }
    eventChain = eventChain.then(() => handleEvent(ev)).catch(reportLater);
  });
  ws.addEventListener("close", (e) => {
    if (socket !== ws) return;
    socket = null;
    ready = false;
    onClosed(e.code, e.reason);
  });
}

async function onClosed(code, reason = "") {
  if (code === 4401) {
    // The access token expired: a fresh one, then straight back.
    if (await refreshAccess()) connect();
    return;
  }
  if (code === 4403) {
    // 4403 with "account disabled" (open socket) or "this account has been disabled" (a
    // reconnect): an operator disabled this account. Anything else forbidden says less.
    endSession(/disabled/i.test(reason) ? DISABLED : "This account can no longer chat here.");
    return;
  }
  const base = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** reconnectAttempt);
  const delay = base / 2 + Math.random() * (base / 2);
  reconnectAttempt += 1;
  setConnection("offline");
  setBanner(`Connection lost. Reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`);
  reconnectTimer = setTimeout(connect, delay);
}

function sendFrame(frame) {
  if (!socket || !ready || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(frame));
  return true;
}

function joinAll() {
  if (!ready) return;
  const order = [...conversations.values()].sort((a, b) => b.updated - a.updated);
  for (const conv of order) {
    if (joined.size >= JOIN_LIMIT) break;
    if (joined.has(conv.id)) continue;
    joined.add(conv.id);
    sendFrame({ type: "join_conversation", conversation_id: conv.id });
  }
}

async function handleEvent(ev) {
  switch (ev.type) {
    case "connection_established":
      ready = true;
      reconnectAttempt = 0;
      setConnection("online");
      setBanner("");
      joinAll();
      sendFrame({ type: "sync", since_message_id: auth.lastMessageId });
      for (const clientId of pending.keys()) sendPending(clientId);
      break;
    case "new_message":
      await onNewMessage(ev);
      break;
    case "message_sent":
      onMessageSent(ev);
      break;
    case "typing_indicator":
      await onTyping(ev);
      break;
    case "read_receipt":
      onReadReceipt(ev);
      break;
    case "presence":
      presence.set(ev.user_id, { online: ev.status === "online", last_seen: ev.last_seen });
      renderList();
      if (current !== null) renderThreadHeader();
      break;
    case "sync_complete":
      if (ev.has_more) sendFrame({ type: "sync", since_message_id: ev.last_message_id });
      else scheduleRefresh();
      break;
    case "unread_count":
      // Another tab of mine read something: the list's counts are stale.
      scheduleRefresh();
      break;
    case "error":
      onServerError(ev);
      break;
    default:
      break; // joined, left, pong
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering

function setConnection(stateName) {
  const text = {
    connecting: "Connecting…",
    reconnecting: "Reconnecting…",
    online: "Connected",
    offline: "Offline",
  }[stateName];
  el.connectionText.textContent = text;
  el.connectionDot.classList.toggle("online", stateName === "online");
}

function setBanner(text) {
  el.banner.textContent = text;
  el.banner.hidden = !text;
}

function presenceText(userId) {
  const p = presence.get(userId);
  if (!p) return "Offline";
  if (p.online) return "Online";
  return p.last_seen ? `Last seen ${formatTime(p.last_seen)}` : "Offline";
}

const listItems = new Map();

function renderList() {
  const order = [...conversations.values()].sort((a, b) => b.updated - a.updated || b.id - a.id);
  const focused = document.activeElement;
  for (const conv of order) {
    let li = listItems.get(conv.id);
    if (!li) {
      li = h("li", {});
      listItems.set(conv.id, li);
    }
    const name = nameOf(conv.peer);
    const online = presence.get(conv.peer)?.online === true;
    const typing = conv.typing !== null;
    const preview = typing
      ? "typing…"
      : conv.last
        ? `${conv.last.sender === me.id ? "You: " : ""}${conv.last.text}`
        : "No messages yet";
    const button = li.firstElementChild ?? li.appendChild(
      h("button", {
        type: "button",
        class: "conversation-item",
        dataset: { conversationId: conv.id },
        onclick: () => openConversation(conv.id),
      }),
    );
    button.classList.toggle("unread", conv.unread > 0);
    button.setAttribute("aria-current", conv.id === current ? "true" : "false");
    replaceChildren(
      button,
      h("span", { class: "avatar", "aria-hidden": "true" }, initial(name), h("span", { class: online ? "dot online" : "dot" })),
      h("span", { class: "conversation-name" }, name, h("span", { class: "visually-hidden" }, online ? ", online" : ", offline")),
      h("span", { class: "conversation-time" }, conv.last ? formatTime(conv.last.created_at) : ""),
      h("span", { class: typing ? "conversation-preview is-typing" : "conversation-preview" }, preview),
      conv.unread > 0
        ? h(
            "span",
            { class: "unread-count" },
            h("span", { class: "badge", "aria-hidden": "true" }, String(conv.unread)),
            h("span", { class: "visually-hidden" }, `, ${conv.unread} unread`),
          )
        : h("span", {}),
    );
  }
  // Reorder without rebuilding, so a focused item keeps its focus.
  order.forEach((conv, i) => {
    const li = listItems.get(conv.id);
    if (el.list.children[i] !== li) el.list.insertBefore(li, el.list.children[i] ?? null);
  });
  if (focused && focused !== document.activeElement && el.list.contains(focused)) focused.focus();
  el.listEmpty.hidden = conversations.size > 0;
  const unread = order.reduce((n, c) => n + c.unread, 0);
  document.title = unread ? `(${unread}) Indaba demo chat` : "Indaba demo chat";
}

function initial(name) {
  return (name.trim()[0] || "?").toUpperCase();
}

function renderThreadHeader() {
  const conv = conversations.get(current);
  if (!conv) return;
  el.peerName.textContent = nameOf(conv.peer);
  el.peerPresence.textContent = presenceText(conv.peer);
  el.peerDot.classList.toggle("online", presence.get(conv.peer)?.online === true);
}

function receiptState(conv, msg) {
  return msg.id <= conv.readUpTo ? "read" : "sent";
}

function setReceipt(li, stateName) {
  const receipt = li.querySelector(".receipt");
  if (!receipt) return;
  receipt.className = `receipt ${stateName}`;
  receipt.textContent = { sending: "Sending…", sent: "✓ Sent", read: "✓✓ Read", failed: "Not sent" }[stateName];
  li.dataset.status = stateName;
}

function messageItem(msg, receipt) {
  const mine = msg.sender === me.id;
  const li = h(
    "li",
    { class: mine ? "message mine" : "message" },
    h("span", { class: "visually-hidden" }, mine ? "You: " : `${nameOf(msg.sender)}: `),
    h("div", { class: "bubble" }, msg.text),
    h(
      "div",
      { class: "meta" },
      h("time", { datetime: msg.created_at }, formatTime(msg.created_at)),
      mine ? h("span", { class: "receipt" }) : null,
    ),
  );
  if (msg.id !== null) li.dataset.messageId = msg.id;
  if (mine) setReceipt(li, receipt);
  return li;
}

/** Puts a message in its place by id (pending sends stay last). */
function insertMessage(msg) {
  const conv = conversations.get(msg.conversation);
  const li = messageItem(msg, receiptState(conv, msg));
  const next = [...el.messages.children].find(
    (other) => other.dataset.clientId || Number(other.dataset.messageId) > msg.id,
  );
  const atEnd = isScrolledToEnd();
  if (next) el.messages.insertBefore(li, next);
  else el.messages.append(li);
  if (atEnd || msg.sender === me.id) scrollToEnd();
}

function renderMessages(conv) {
  el.messages.setAttribute("aria-busy", "true");
  const sorted = [...conv.messages.values()].sort((a, b) => a.id - b.id);
  const older = conv.olderBefore
    ? h("li", { class: "older" }, h("button", { type: "button", class: "btn btn-secondary btn-small", onclick: () => loadOlder(conv) }, "Show earlier messages"))
    : null;
  replaceChildren(el.messages, older, sorted.map((m) => messageItem(m, receiptState(conv, m))));
  for (const p of pending.values()) if (p.conversation === conv.id) el.messages.append(p.li);
  el.messages.setAttribute("aria-busy", "false");
}

async function loadOlder(conv) {
  await loadHistory(conv, conv.olderBefore);
  if (conv.id === current) renderMessages(conv);
}

function updateReceipts(conv) {
  for (const li of el.messages.querySelectorAll(".message.mine[data-message-id]")) {
    setReceipt(li, Number(li.dataset.messageId) <= conv.readUpTo ? "read" : "sent");
  }
}

function isScrolledToEnd() {
  const m = el.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 40;
}

function scrollToEnd() {
  el.messages.scrollTop = el.messages.scrollHeight;
}

function sizeComposer() {
  const lines = el.composerInput.value.split("\n").length;
  el.composerInput.rows = Math.min(5, Math.max(1, lines));
}

async function openConversation(id) {
  const conv = conversations.get(id);
  if (!conv) return;
  if (current !== id) stopTyping();
  current = id;
  el.composerError.textContent = "";
  el.chatView.classList.add("conversation-open");
  el.placeholder.hidden = true;
  el.thread.hidden = false;
  renderThreadHeader();
  el.typing.textContent = conv.typing !== null ? `${nameOf(conv.typing)} is typing…` : "";
  renderMessages(conv);
  renderList();
  el.composerInput.focus();
  scrollToEnd();
  if (!conv.historyLoaded) {
    try {
      await loadHistory(conv);
    } catch (e) {
      el.composerError.textContent = e instanceof ApiError ? e.detail : "History could not be loaded.";
    }
    if (current !== id) return;
    renderMessages(conv);
    scrollToEnd();
  }
  if (isReading(conv)) markRead(conv);
  renderList();
}

function closeConversation() {
  stopTyping();
  current = null;
  el.chatView.classList.remove("conversation-open");
  el.thread.hidden = true;
  el.placeholder.hidden = false;
  el.messages.replaceChildren();
}

function reportLater(e) {
  // A failure in the background (network gone): the socket's reconnect and the next refresh
  // recover; nothing to show beyond the connection state.
  if (e instanceof ApiError && e.status === 0) return;
  if (e instanceof ApiError && e.status === 401) return;
  setTimeout(() => {
    throw e;
  });
}

// ---------------------------------------------------------------------------------------------
// Wiring

el.authForm.addEventListener("submit", onAuthSubmit);
el.authSwitch.addEventListener("click", () => {
  setAuthMode(authMode === "signin" ? "register" : "signin");
  el.authUsername.focus();
});
el.signOut.addEventListener("click", signOut);
el.newForm.addEventListener("submit", onNewConversation);
el.composer.addEventListener("submit", onComposerSubmit);
el.composerInput.addEventListener("input", onComposerInput);
el.composerInput.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    el.composer.requestSubmit();
  }
});
el.composerInput.addEventListener("blur", stopTyping);
el.back.addEventListener("click", () => {
  const id = current;
  closeConversation();
  renderList();
  listItems.get(id)?.firstElementChild?.focus();
});
document.addEventListener("visibilitychange", () => {
  const conv = conversations.get(current);
  if (conv && isReading(conv)) {
    markRead(conv);
    renderList();
  }
});
window.addEventListener("online", () => {
  if (auth && !socket) {
    reconnectAttempt = 0;
    connect();
  }
});

boot();
