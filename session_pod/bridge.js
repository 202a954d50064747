// In-page half of the driver, and the only code that calls WhatsApp Web's WPP API.
// Installed as a context init script, so it runs again on every page load: it waits for
// WPP to be ready, (re)registers its listeners and reports "attached" to Python.
// Every value crosses to Python as plain JSON: WhatsApp's models have cycles and
// Playwright's serializer ignores toJSON.
(() => {
  if (window.top !== window) return;

  const wid = (w) => (w == null ? null : String(w._serialized ?? w));

  const message = (m) => ({
    id: wid(m.id),
    fromMe: Boolean(m.id?.fromMe),
    from: wid(m.from),
    to: wid(m.to),
    author: wid(m.author),
    body: m.body ?? '',
    type: m.type ?? 'chat',
    timestamp: m.t ?? null,
    ack: m.ack ?? null,
  });

  const contact = (c) => ({
    id: { server: c.id.server, user: c.id.user, _serialized: wid(c.id) },
    isMe: Boolean(c.isMe),
    name: c.name ?? null,
    pushname: c.pushname ?? null,
    shortName: c.shortName ?? null,
    number: c.id.user,
    isGroup: Boolean(c.isGroup),
    isMyContact: Boolean(c.isMyContact),
    isWAContact: Boolean(c.isWAContact),
  });

  const snapshot = async () => {
    const code = await WPP.conn.getAuthCode();
    return {
      authenticated: WPP.conn.isAuthenticated(),
      mode: WPP.conn.getStreamData().mode,
      qr: code ? code.fullCode : null,
      me: wid(WPP.conn.getMyUserId()),
    };
  };

  const EVENTS = {
    'conn.auth_code_change': () => null,
    'conn.qrcode_idle': () => null,
    'conn.authenticated': () => null,
    'conn.logout': () => null,
    'conn.logout_reason': (reason) => ({ reason: String(reason) }),
    'conn.stream_mode_changed': (mode) => ({ mode: String(mode) }),
    'conn.main_ready': () => null,
    'conn.online': (online) => ({ online: Boolean(online) }),
    'chat.new_message': message,
    'chat.msg_ack_change': (e) => ({ ack: e.ack, chat: wid(e.chat), ids: e.ids.map(wid) }),
  };

  const report = async (type, data) => {
    let state = null;
    try {
      state = await snapshot();
    } catch (e) {
      // The page is going away (reload after logout): Python re-reads it on "attached".
    }
    await window.__waBridge({ type, data, snapshot: state });
  };

  window.__waCommands = {
    ping: () => true,
    snapshot,
    numberExists: async (chatId) => {
      const found = await WPP.contact.queryWidExists(chatId);
      return found ? wid(found.wid) : null;
    },
    sendText: async (chatId, text) => {
      const sent = await WPP.chat.sendTextMessage(chatId, text, { createChat: true });
      return { id: wid(sent.id), ack: sent.ack };
    },
    archive: async (chatId) => {
      try {
        await WPP.chat.archive(chatId, true);
        return true;
      } catch (e) {
        if (/already archived/.test(String(e?.message ?? e))) return false;
        throw e;
      }
    },
    chats: async (count, messagesPerChat) => {
      const chats = await WPP.chat.list({ count });
      return Promise.all(
        chats.map(async (c) => ({
          id: wid(c.id),
          name: c.name || c.formattedTitle || c.id.user,
          isGroup: Boolean(c.isGroup),
          messages: (await WPP.chat.getMessages(c.id, { count: messagesPerChat })).map(message),
        })),
      );
    },
    contacts: async () => (await WPP.contact.list()).map(contact),
    syncFinished: () => !WPP.conn.getHistorySyncProgress().inProgress,
    logout: () => WPP.conn.logout(),
    refreshQR: async () => {
      const code = await WPP.conn.refreshQR();
      return code ? code.fullCode : null;
    },
  };

  const attach = () => {
    for (const [name, shape] of Object.entries(EVENTS)) {
      WPP.on(name, (arg) => report(name, shape(arg)));
    }
    report('attached', null);
  };

  const waitForWPP = setInterval(() => {
    if (window.WPP && WPP.isReady && typeof window.__waBridge === 'function') {
      clearInterval(waitForWPP);
      attach();
    }
  }, 50);
})();
