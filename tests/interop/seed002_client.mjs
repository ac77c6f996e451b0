// Seed 002's browser client class (`ChatWebSocket`), verbatim but for three things: the URL
// (the server address comes from argv instead of localhost:8000), the token (argv instead of
// localStorage), and the UI hooks the seed leaves to the app (displayMessage & co.), which
// here print what they are given. Run with `node --experimental-websocket` (Node 20).
//
//   node --experimental-websocket seed002_client.mjs HOST:PORT TOKEN CONVERSATION RECEIVER

const [host, token, conversationId, receiverId] = process.argv.slice(2);
globalThis.localStorage = { getItem: () => token };
const log = (kind, data) => console.log(JSON.stringify({ kind, data }));

class ChatWebSocket {
  constructor(userId) {
    this.userId = userId;
    this.ws = null;
    this.reconnectAttempts = 0;
    this.maxReconnectAttempts = 5;
  }

  connect() {
    // Get auth token from localStorage or cookie
    const token = localStorage.getItem('authToken');

    // Connect to WebSocket (include auth in URL or header)
    this.ws = new WebSocket(`ws://${host}/ws/chat/?token=${token}`);

    this.ws.onopen = () => {
      console.log('WebSocket connected');
      this.reconnectAttempts = 0;
    };

    this.ws.onmessage = (event) => {
      const data = JSON.parse(event.data);
      this.handleMessage(data);
    };

    this.ws.onerror = (error) => {
      console.error('WebSocket error:', error);
    };

    this.ws.onclose = () => {
      console.log('WebSocket closed');
    };
  }

  handleMessage(data) {
    switch (data.type) {
      case 'connection_established':
        console.log('Connected to chat server');
        log('connection_established', data);
        // The app's first action once connected.
        this.sendTypingIndicator(Number(conversationId), Number(receiverId), true);
        this.sendMessage(Number(conversationId), Number(receiverId), 'Hello!');
        break;

      case 'new_message':
        // Display new message in UI
        this.displayMessage(data);
        // Send read receipt
        this.sendReadReceipt([data.message_id]);
        break;

      case 'typing_indicator':
        // Show "User is typing..." indicator
        this.showTypingIndicator(data);
        break;

      case 'read_receipt':
        // Update message status to "Read"
        this.updateMessageStatus(data.message_ids, 'read');
        break;

      case 'message_sent':
        // Confirm message was sent
        this.updateMessageStatus([data.message_id], 'delivered');
        break;

      default:
        console.log('Unknown message type:', data.type);
    }
  }

  sendMessage(conversationId, receiverId, text) {
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({
        type: 'chat_message',
        conversation_id: conversationId,
        receiver_id: receiverId,
        text: text
      }));
    }
  }

  sendTypingIndicator(conversationId, receiverId, isTyping = true) {
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({
        type: 'typing_indicator',
        conversation_id: conversationId,
        receiver_id: receiverId,
        is_typing: isTyping
      }));
    }
  }

  sendReadReceipt(messageIds) {
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({
        type: 'read_receipt',
        message_ids: messageIds
      }));
    }
  }

  joinConversation(conversationId) {
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({
        type: 'join_conversation',
        conversation_id: conversationId
      }));
    }
  }

  // The UI hooks the seed leaves to the app: here they report what they receive.
  displayMessage(data) { log('new_message', data); }
  showTypingIndicator(data) { log('typing_indicator', data); }
  updateMessageStatus(ids, status) {
    log(status, ids);
    if (status === 'read') { this.ws.close(); }
  }
}

const chat = new ChatWebSocket(0);
chat.connect();
setTimeout(() => { console.error('timed out'); process.exit(1); }, 10000);
chat.ws.addEventListener('close', () => process.exit(0));
