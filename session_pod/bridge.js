// In-page half of the driver, and the only code that calls WhatsApp Web's WPP API.
// Installed as a context init script, so it runs again on every page load: it waits for
// WPP to be ready, (re)registers its listeners and reports "attached" to Python.
// Every value crosses to Python as plain JSON: WhatsApp's models have cycles and
// Playwright's serializer ignores toJSON. What each call relies on in wa-js 4.6.0 is in
// README ("The WhatsApp Web double"), with the wa-js file it comes from.
(() => {
  if (window.top !== window) return;

  // Message keys carry `_serialized` only where wa-js patched it in: toString() otherwise.
  /** @param {any} w a Wid, a MsgKey, a string or nothing */
  const wid = (w) => (w == null ? null : String(w._serialized ?? w.toString()));
  /** @param {unknown} e */
  const errorCode = (e) => (e && typeof e === 'object' && 'code' in e ? String(e.code) : '');

  /** @param {any} m a MsgModel (chat.new_message, getMessages and getMessageById give models) */
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
    isNotification: Boolean(m.isNotification),
    isStatus: Boolean(m.isStatusV3) || wid(m.from) === 'status@broadcast',
  });

  // wa-js patches ContactModel.isGroup/isUser as getters that return a FUNCTION
  // (src/contact/patch.ts L45-46): only the wid says what a contact is.
  /** @param {any} c a ContactModel */
  const contact = (c) => ({
    id: { server: c.id.server, user: c.id.user, _serialized: wid(c.id) },
    isMe: Boolean(c.isMe),
    name: c.name ?? null,
    pushname: c.pushname ?? null,
    shortName: c.shortName ?? null,
    number: c.id.user,
    isGroup: c.id.server === 'g.us',
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

  // Each handler's parameter is typed by wa-js's own event table (tsc checks the names and
  // the payload fields: tests/test_bridge_types.py).
  /** @satisfies {{ [K in keyof WaEventTypes]?: (payload: WaEventTypes[K]) => unknown }} */
  const EVENTS = {
    'conn.auth_code_change': () => null,
    'conn.qrcode_idle': () => null,
    'conn.authenticated': () => null,
    'conn.logout': () => null,
    'conn.logout_reason': (reason) => ({ reason: String(reason) }),
    'conn.stream_mode_changed': (mode) => ({ mode: String(mode) }),
    'conn.main_ready': () => null,
    'conn.online': (online) => ({ online: Boolean(online) }),
    // The managed phone-number linking flow (src/conn/functions/linkDeviceCodeLifecycle.ts).
    'conn.link_code_change': (code) => ({ code: String(code) }),
    'conn.link_code_expired': () => null,
    'conn.link_code_error': (error) => ({ error: error.message }),
    'chat.new_message': (m) => message(m),
    'chat.msg_ack_change': (e) => ({ ack: e.ack, chat: wid(e.chat), ids: e.ids.map(wid) }),
  };

  const report = async (/** @type {string} */ type, /** @type {unknown} */ data) => {
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
    // queryWidExists answers null both for "not on WhatsApp" and for any server error
    // (src/contact/functions/queryWidExists.ts L86-103): a null is asked again of WhatsApp's
    // own function (src/whatsapp/functions/sendQueryExists.ts), which throws on errors.
    checkNumber: async (/** @type {string} */ chatId) => {
      const found = await WPP.contact.queryWidExists(chatId);
      if (found) return { wid: wid(found.wid) };
      try {
        const again = await WPP.whatsapp.functions.queryWidExists(
          WPP.whatsapp.WidFactory.createWid(chatId),
        );
        return again ? { wid: wid(again.wid) } : null;
      } catch (e) {
        return { unchecked: true, error: String(e instanceof Error ? e.message : e) };
      }
    },
    // The id is chosen before the send (SendMessageOptions.messageId, applied in
    // src/chat/functions/prepareRawMessage.ts L120-146): its remote must be the chat that
    // chat.find resolves, which may be a @lid chat (src/chat/functions/find.ts).
    prepareSend: async (/** @type {string} */ chatId) => {
      const chat = await WPP.chat.find(chatId);
      const key = await WPP.chat.generateMessageID(chat);
      return { chat: wid(chat.id), id: wid(key) };
    },
    // sendTextMessage resolves with sendMsgResult instead of throwing when WhatsApp refuses
    // (src/chat/functions/sendRawMessage.ts L131-155), and with waitForAck it can wait for the
    // server for as long as the page is offline: the wait is bounded here, the message stays
    // queued in WhatsApp Web, and its acks arrive as events.
    sendText: async (
      /** @type {string} */ chatId,
      /** @type {string} */ text,
      /** @type {string} */ messageId,
      /** @type {{markIsRead: boolean, linkPreview: boolean, detectMentioned: boolean}} */ options,
      /** @type {number} */ waitMs,
    ) => {
      const sending = WPP.chat.sendTextMessage(chatId, text, { ...options, messageId, waitForAck: true });
      const bound = /** @type {Promise<null>} */ (
        new Promise((resolve) => setTimeout(() => resolve(null), waitMs))
      );
      const sent = await Promise.race([sending, bound]);
      if (sent === null) return { id: messageId, ack: 0, result: null };
      return { id: wid(sent.id), ack: sent.ack, result: sent.sendMsgResult?.messageSendResult ?? null };
    },
    // null when WhatsApp does not have it (src/chat/functions/getMessageById.ts: WPPError
    // msg_not_found; assertGetChat's chat_not_found for a chat that does not exist).
    findMessage: async (/** @type {string} */ id) => {
      try {
        return message(await WPP.chat.getMessageById(id));
      } catch (e) {
        if (['msg_not_found', 'chat_not_found'].includes(errorCode(e))) return null;
        throw e;
      }
    },
    archive: async (/** @type {string} */ chatId) => {
      try {
        await WPP.chat.archive(chatId, true);
        return true;
      } catch (e) {
        if (/already archived/.test(String(e instanceof Error ? e.message : e))) return false;
        throw e;
      }
    },
    chats: async (/** @type {number} */ count, /** @type {number} */ messagesPerChat) => {
      const chats = await WPP.chat.list({ count });
      return Promise.all(
        chats.map(async (/** @type {any} */ c) => ({
          id: wid(c.id),
          name: c.name || c.formattedTitle || c.id.user,
          isGroup: c.id.server === 'g.us',
          messages: (await WPP.chat.getMessages(c.id, { count: messagesPerChat })).map(message),
        })),
      );
    },
    // The chats that changed most recently, with their last activity (seconds).
    recentChats: async (/** @type {number} */ count) =>
      (await WPP.chat.list({ count })).map((/** @type {any} */ c) => ({ id: wid(c.id), t: c.t ?? 0 })),
    chatMessages: async (/** @type {string} */ chatId, /** @type {number} */ count) =>
      (await WPP.chat.getMessages(chatId, { count })).map(message),
    // contact.list holds @lid contacts too, whose "number" is no phone number: left out.
    contacts: async () =>
      (await WPP.contact.list())
        .filter((/** @type {any} */ c) => c.id.server === 'c.us' || c.id.server === 'g.us')
        .map(contact),
    // A code for the phone with this number to type in, instead of scanning the QR. wa-js's
    // managed flow gives the same number its active code again and renews it as it expires
    // (src/conn/functions/linkDeviceCodeLifecycle.ts); genLinkDeviceCodeForPhoneNumber.ts
    // refuses once authenticated.
    pairingCode: async (/** @type {string} */ phone) => {
      try {
        return { code: await WPP.conn.startLinkDeviceCodeForPhoneNumber(phone) };
      } catch (e) {
        if (errorCode(e) === 'cannot_get_code_for_already_authenticated') return { linked: true };
        throw e;
      }
    },
    syncFinished: () => !WPP.conn.getHistorySyncProgress().inProgress,
    logout: () => WPP.conn.logout(),
  };

  /** @param {keyof typeof EVENTS} name */
  const listen = (name) => {
    const shape = /** @type {(payload: unknown) => unknown} */ (EVENTS[name]);
    WPP.on(name, (payload) => report(name, shape(payload)));
  };

  const attach = () => {
    for (const name of /** @type {(keyof typeof EVENTS)[]} */ (Object.keys(EVENTS))) listen(name);
    // As wa-js's tools and WPPConnect do: no service worker, and the connection kept alive.
    navigator.serviceWorker
      ?.getRegistrations()
      .then((registrations) => registrations.forEach((r) => r.unregister()))
      .catch(() => {});
    WPP.conn.setKeepAlive(true);
    report('attached', null);
  };

  const waitForWPP = setInterval(() => {
    if (window.WPP && WPP.isReady && typeof window.__waBridge === 'function') {
      clearInterval(waitForWPP);
      attach();
    }
  }, 50);
})();
