// The WhatsApp Web double's stand-in for @wppconnect/wa-js 4.6.0: a subset of `window.WPP`
// with wa-js's names, return shapes AND behaviours, backed by the double's server over the
// WebSocket /ws. Each behaviour cites the wa-js file it follows (paths in the
// wppconnect-team/wa-js repository at tag v4.6.0); README ("The WhatsApp Web double") lists
// them. The login lives where WhatsApp Web keeps it: localStorage `last-wid-md` and
// `WANoiseInfo`, and the IndexedDB database `wawc` (object store `user`). Both halves must be
// present and agree for a session to be restored.
(() => {
  'use strict';

  const DB = 'wawc';
  const STORE = 'user';
  const TOKEN_KEY = 'device-token';
  const STREAM_INFO = { QR: 'NORMAL', SYNCING: 'SYNCING', MAIN: 'NORMAL', OFFLINE: 'CONNECTING' };
  // src/chat/defaultSendMessageOptions.ts
  const DEFAULT_SEND_OPTIONS = {
    detectMentioned: true,
    linkPreview: true,
    markIsRead: true,
    waitForAck: true,
    delay: 0,
  };

  const state = {
    ready: false,
    mode: 'OFFLINE',
    online: false,
    authenticated: false,
    registered: false,
    qrShown: false,
    scannedThisLoad: false, // conn.authenticated fires only then (src/conn/events/registerAuthenticatedEvent.ts)
    widMd: null, // "5491100000001:12@c.us", as in `last-wid-md`
    token: null,
    authCode: null,
    qrIdle: false,
    syncProgress: 0, // realProgress; null when WhatsApp never reports it (issue #2734)
    keepAlive: false,
    fault: null, // a crash the test asked for at a precise moment
  };
  const listeners = new Map();
  const readyListeners = [];
  const pending = new Map();
  const waitingForSocket = []; // sends made while offline: WhatsApp Web keeps them and retries
  const msgStore = new Map(); // the page's MsgStore: lost with the page
  let socket = null;
  let nextRequestId = 1;
  let inbox = Promise.resolve();

  // ---- models ---------------------------------------------------------------------------

  // Like wa-js's WPPError (src/util/WPPError.ts): a code the caller can test.
  class WPPError extends Error {
    constructor(code, message, extra = {}) {
      super(message);
      this.name = 'WPPError';
      this.code = code;
      Object.assign(this, extra);
    }
  }

  // Like WhatsApp's Wid: data as own properties, methods on the prototype.
  class Wid {
    constructor(serialized) {
      [this.user, this.server] = serialized.split('@');
      this._serialized = serialized;
    }

    toString() {
      return this._serialized;
    }

    equals(other) {
      return other != null && String(other) === this._serialized;
    }

    isGroup() {
      return this.server === 'g.us';
    }

    isUser() {
      return this.server === 'c.us' || this.server === 'lid';
    }

    isLid() {
      return this.server === 'lid';
    }
  }

  // MsgKey: `_serialized` is there only because wa-js patches it in (src/whatsapp/misc/MsgKey.ts).
  class MsgKey {
    constructor({ fromMe, remote, id, participant }) {
      Object.assign(this, { fromMe, remote: new Wid(String(remote)), id });
      if (participant) this.participant = new Wid(String(participant));
      this._serialized = `${fromMe}_${this.remote}_${id}${participant ? `_${participant}` : ''}`;
    }

    toString() {
      return this._serialized;
    }

    static fromString(serialized) {
      const [fromMe, remote, id, participant] = serialized.split('_');
      return new MsgKey({ fromMe: fromMe === 'true', remote, id, participant });
    }
  }

  const wid = (serialized) => new Wid(serialized);
  const message = (raw) => {
    const model = { ...raw, id: new MsgKey(raw.id), from: wid(raw.from), to: wid(raw.to) };
    if (raw.author) model.author = wid(raw.author);
    return model;
  };
  const idOf = (chatId) => (chatId && chatId._serialized) || String(chatId);

  // src/contact/patch.ts L45-46: isUser/isGroup are getters that return a FUNCTION.
  const contactModel = (raw) => {
    const model = { ...raw, id: wid(raw.id) };
    Object.defineProperty(model, 'isUser', { get: () => () => model.id.isUser(), enumerable: true });
    Object.defineProperty(model, 'isGroup', { get: () => () => model.id.isGroup(), enumerable: true });
    return model;
  };

  // ---- events ---------------------------------------------------------------------------

  function emit(name, ...args) {
    if (LINK_CODE_CANCELLED_BY.includes(name)) cancelLinkDeviceCode();
    for (const listener of [...(listeners.get(name) || [])]) {
      try {
        listener(...args);
      } catch (error) {
        console.error(`WPP listener of ${name} failed`, error);
      }
    }
  }

  function render() {
    const status = document.getElementById('status');
    if (status) {
      const code = state.authCode ? `\n${state.authCode.fullCode}` : '';
      status.textContent = `${state.mode}${state.widMd ? ` ${state.widMd}` : ''}${code}`;
    }
    const reload = document.getElementById('qr-reload');
    if (reload) reload.hidden = !(state.mode === 'QR' && state.qrIdle);
    const qr = document.querySelector('[data-ref]');
    if (qr) qr.dataset.ref = state.authCode && !state.qrIdle ? state.authCode.ref : '';
  }

  function setMode(mode) {
    if (mode === state.mode) return;
    state.mode = mode;
    emit('conn.stream_mode_changed', mode);
    // src/conn/events/registerMainReadyEvent.ts: once per load, on the first QR or MAIN.
    if (mode === 'MAIN' || (mode === 'QR' && !state.qrShown)) emit('conn.main_ready');
    if (mode === 'QR') state.qrShown = true;
    render();
  }

  function setOnline(online) {
    if (online === state.online) return;
    state.online = online;
    emit('conn.online', online);
  }

  function setAuthCode(code) {
    state.authCode = code;
    emit('conn.auth_code_change', code);
    render();
  }

  // A hung page, as a crashed renderer looks to the session pod.
  function hang() {
    for (;;) {
      // never returns
    }
  }

  // ---- login storage --------------------------------------------------------------------

  function openDb() {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(DB, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: 'key' });
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  // Runs one operation in its own transaction; resolves once the transaction committed.
  async function inStore(mode, operation) {
    const db = await openDb();
    try {
      return await new Promise((resolve, reject) => {
        const tx = db.transaction(STORE, mode, { durability: 'strict' });
        const request = operation(tx.objectStore(STORE));
        tx.oncomplete = () => resolve(request.result);
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error);
      });
    } finally {
      db.close();
    }
  }

  function parseJson(text) {
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }

  async function readLogin() {
    const widMd = parseJson(localStorage.getItem('last-wid-md'));
    const noise = parseJson(localStorage.getItem('WANoiseInfo'));
    const record = await inStore('readonly', (store) => store.get(TOKEN_KEY));
    const token = noise && noise.token;
    const complete = typeof widMd === 'string' && token && record && record.value === token;
    return complete ? { widMd, token } : null;
  }

  async function storeLogin(widMd, token) {
    await inStore('readwrite', (store) => store.put({ key: TOKEN_KEY, value: token }));
    localStorage.setItem('WANoiseInfo', JSON.stringify({ token }));
    localStorage.setItem('last-wid-md', JSON.stringify(widMd));
  }

  async function forgetLogin(reason) {
    localStorage.removeItem('last-wid-md');
    localStorage.removeItem('WANoiseInfo');
    await inStore('readwrite', (store) => store.delete(TOKEN_KEY));
    Object.assign(state, { widMd: null, token: null, authenticated: false, registered: false });
    emit('conn.logout_reason', reason);
    emit('conn.logout');
    render();
  }

  // After a logout WhatsApp Web reloads itself; a short delay lets a pending
  // `await WPP.conn.logout()` return to its caller first.
  const reloadSoon = () => setTimeout(() => location.reload(), 100);

  // ---- the socket to the double ---------------------------------------------------------

  const handlers = {
    qr: ({ code }) => {
      state.authCode = code; // already in place for the listeners of the mode change
      state.qrIdle = false;
      setOnline(true);
      setMode('QR');
      setAuthCode(code);
    },
    // src/conn/events/registerQrCodeIdleEvent.ts: no payload. The ref stays behind in the
    // page (whether WhatsApp clears it was not confirmed), so getAuthCode may still return
    // the code that went idle: it must not be shown again.
    qr_idle: () => {
      state.qrIdle = true;
      emit('conn.qrcode_idle');
      render();
    },
    resume: ({ syncProgress }) => {
      state.authenticated = true;
      state.syncProgress = syncProgress;
      setOnline(true);
      setMode('SYNCING');
    },
    authenticated: async ({ wid: widMd, token }) => {
      await storeLogin(widMd, token);
      Object.assign(state, { widMd, token, authenticated: true, registered: true });
      state.scannedThisLoad = true;
      send({ type: 'stored' });
      setAuthCode(null);
      setMode('SYNCING');
    },
    main: ({ syncProgress }) => {
      state.syncProgress = syncProgress;
      setMode('MAIN');
      // src/conn/events/registerAuthenticatedEvent.ts: on Cmd 'main_loaded', only when the
      // page was not authenticated at injection: after a scan, never for a restored session,
      // and it may come after MAIN.
      if (state.scannedThisLoad) {
        state.scannedThisLoad = false;
        setTimeout(() => emit('conn.authenticated'), 50);
      }
    },
    invalid: ({ reason }) => forgetLogin(reason),
    logout: async ({ reason }) => {
      await forgetLogin(reason);
      reloadSoon();
    },
    // src/chat/events/registerNewMessageEvent.ts: every new message of the store, the
    // ciphertext placeholder included; the page tells the server it took the message.
    message: ({ message: raw }) => {
      if (state.fault === 'hang_after_taking_incoming') {
        send({ type: 'took', id: raw.id._serialized });
        hang();
      }
      const model = message(raw);
      if (raw.type !== 'ciphertext') msgStore.set(model.id._serialized, model);
      emit('chat.new_message', model);
      if (raw.type !== 'ciphertext') send({ type: 'took', id: raw.id._serialized });
    },
    // src/chat/events/registerAckMessageEvent.ts: {ack, chat, sender?, ids: MsgKey[]}.
    ack: ({ ack, chat, ids }) => {
      for (const key of ids) {
        const local = msgStore.get(key._serialized);
        if (local) local.ack = ack;
      }
      emit('chat.msg_ack_change', { ack, chat: wid(chat), ids: ids.map((k) => new MsgKey(k)) });
    },
    fault: ({ fault }) => {
      state.fault = fault;
    },
    response: ({ id, result, error, code }) => {
      const request = pending.get(id);
      pending.delete(id);
      if (request && error !== undefined) request.reject(code ? new WPPError(code, error) : new Error(error));
      else if (request) request.resolve(result);
    },
    crash: () => hang(),
  };

  function send(payload) {
    socket.send(JSON.stringify(payload));
  }

  function connect() {
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
    socket = ws;
    ws.onopen = () => {
      send({ type: 'hello', wid: state.widMd, token: state.token, keepAlive: state.keepAlive });
      for (const queued of waitingForSocket.splice(0)) queued();
    };
    ws.onmessage = (event) => {
      const payload = JSON.parse(event.data);
      // One at a time and in order: storing the login must finish before what follows.
      inbox = inbox.then(() => handlers[payload.type](payload)).catch((error) => console.error(error));
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      for (const request of pending.values()) request.reject(new Error('WhatsApp Web is offline'));
      pending.clear();
      setOnline(false);
      setMode('OFFLINE');
      setTimeout(connect, 1000);
    };
  }

  function request(method, params = {}) {
    return new Promise((resolve, reject) => {
      if (!socket || socket.readyState !== WebSocket.OPEN) {
        reject(new Error('WhatsApp Web is offline'));
        return;
      }
      const id = nextRequestId++;
      pending.set(id, { resolve, reject });
      send({ type: 'request', id, method, params });
    });
  }

  // A send goes out as soon as there is a socket: WhatsApp Web keeps an offline message with
  // ack 0 (CLOCK) and sends it once connected, so the promise can wait for a long time.
  function sendWhenOnline(params) {
    return new Promise((resolve, reject) => {
      const go = () => request('send_text', params).then(resolve, reject);
      if (socket && socket.readyState === WebSocket.OPEN) go();
      else waitingForSocket.push(go);
    });
  }

  async function find(chatId) {
    // src/chat/functions/find.ts L57-66: the chat found for a phone number may be a @lid chat.
    const found = await request('find_chat', { chatId: idOf(chatId) });
    return { id: wid(found.id), name: found.name, formattedTitle: found.formattedTitle };
  }

  // src/chat/functions/generateMessageID.ts: a MsgKey from me, remote = the chat's id.
  function generateMessageID(chat) {
    const to = chat && chat.id ? chat.id : wid(idOf(chat));
    const bytes = crypto.getRandomValues(new Uint8Array(10));
    const id = `3EB0${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('').toUpperCase()}`;
    return new MsgKey({ fromMe: true, remote: to._serialized, id });
  }

  // src/chat/functions/sendRawMessage.ts L131-155 and prepareRawMessage.ts L120-146.
  async function sendTextMessage(chatId, content, options = {}) {
    const opts = { ...DEFAULT_SEND_OPTIONS, ...options };
    const chat = await find(chatId);
    let key;
    if (opts.messageId) {
      key = typeof opts.messageId === 'string' ? MsgKey.fromString(opts.messageId) : opts.messageId;
      if (!key.fromMe) {
        throw new WPPError('message_key_is_not_from_me', 'Message key is not from me', {
          messageId: String(key),
        });
      }
      if (!key.remote.equals(chat.id)) {
        throw new WPPError(
          'message_key_remote_id_is_not_same_of_chat',
          'Message key remote ID is not same of chat',
          { messageId: String(key) },
        );
      }
    } else {
      key = generateMessageID(chat);
    }
    if (state.fault === 'hang_before_send') hang();
    const local = {
      id: key,
      from: wid(`${state.widMd.split('@')[0].split(':')[0]}@c.us`),
      to: chat.id,
      body: String(content),
      type: 'chat',
      t: Math.floor(Date.now() / 1000),
      ack: 0,
    };
    msgStore.set(key._serialized, local);
    emit('chat.new_message', local);
    const sending = sendWhenOnline({ chatId: chat.id._serialized, content: String(content), id: key.id });
    const outcome = sending.then(
      (result) => {
        local.ack = result.ack;
        local.t = result.t;
        return { messageSendResult: result.messageSendResult, t: result.t };
      },
      // The socket went away after the request left: WhatsApp Web would retry it.
      () => new Promise(() => {}),
    );
    let sendMsgResult = null;
    if (opts.waitForAck) sendMsgResult = await outcome;
    return {
      id: key._serialized,
      ack: local.ack,
      from: local.from._serialized,
      to: chat.id._serialized,
      sendMsgResult,
    };
  }

  // src/chat/functions/getMessageById.ts: MsgStore, then the chat, then WhatsApp; WPPError
  // msg_not_found when it does not exist, and assertGetChat throws for an unknown chat.
  async function getMessageById(id) {
    const key = typeof id === 'string' ? MsgKey.fromString(id) : id;
    const local = msgStore.get(key._serialized);
    if (local) return local;
    return message(await request('get_message', { id: key._serialized }));
  }

  // ---- linking with a phone number -------------------------------------------------------

  // src/conn/functions/genLinkDeviceCodeForPhoneNumber.ts: a WPPError without a phone number
  // and once authenticated (so only while the QR is shown); otherwise WhatsApp's alternative
  // device linking answers an 8-character code that the phone's owner types in on the phone.
  async function genLinkDeviceCodeForPhoneNumber(phone, sendPushNotification = true) {
    if (!phone || typeof phone !== 'string') {
      throw new WPPError('send_the_phone_number_to_connect', "Can't get code for without phone number param");
    }
    if (state.authenticated) {
      throw new WPPError(
        'cannot_get_code_for_already_authenticated',
        "Can't get code for already authenticated user",
      );
    }
    return request('link_code', { phone, sendPushNotification });
  }

  // src/conn/functions/linkDeviceCodeLifecycle.ts: the managed flow. The same phone number
  // gets the active code again; a code lives LINK_CODE_TTL_MS and is renewed at most
  // MAX_AUTO_REFRESHES times (conn.link_code_change each time), then conn.link_code_expired;
  // a failure is conn.link_code_error. Cancelled by conn.authenticated, conn.logout and
  // conn.main_ready (which fires once per load, at the first QR or MAIN).
  const LINK_CODE_TTL_MS = 3.25 * 60 * 1000;
  const MAX_AUTO_REFRESHES = 5;
  const LINK_CODE_CANCELLED_BY = ['conn.authenticated', 'conn.logout', 'conn.main_ready'];
  const linking = { code: null, epoch: 0, inFlight: null, phone: null, refreshCount: 0, push: true, timer: null };

  function clearLinkTimer() {
    if (linking.timer) clearTimeout(linking.timer);
    linking.timer = null;
  }

  function scheduleLinkRefresh() {
    clearLinkTimer();
    const epoch = linking.epoch;
    linking.timer = setTimeout(() => {
      if (epoch !== linking.epoch || !linking.phone) return;
      if (linking.refreshCount >= MAX_AUTO_REFRESHES) {
        linking.code = null;
        linking.timer = null;
        emit('conn.link_code_expired');
        return;
      }
      linking.refreshCount++;
      refreshLinkDeviceCode().catch(() => undefined);
    }, LINK_CODE_TTL_MS);
  }

  async function generateLinkDeviceCode() {
    if (!linking.phone) throw new Error('No phone linking flow is active');
    if (linking.inFlight) return linking.inFlight;
    const epoch = linking.epoch;
    const operation = genLinkDeviceCodeForPhoneNumber(linking.phone, linking.push).then((code) => {
      if (epoch !== linking.epoch) return code;
      linking.code = code;
      scheduleLinkRefresh();
      emit('conn.link_code_change', code);
      return code;
    });
    linking.inFlight = operation;
    try {
      return await operation;
    } finally {
      if (linking.inFlight === operation) linking.inFlight = null;
    }
  }

  async function startLinkDeviceCodeForPhoneNumber(phone, sendPushNotification = true) {
    if (linking.phone === phone) {
      if (linking.code) return linking.code;
      if (linking.inFlight) return linking.inFlight;
    } else {
      cancelLinkDeviceCode();
    }
    Object.assign(linking, { phone, push: sendPushNotification, refreshCount: 0 });
    try {
      return await generateLinkDeviceCode();
    } catch (error) {
      linking.code = null;
      emit('conn.link_code_error', error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
  }

  async function refreshLinkDeviceCode() {
    if (!linking.phone) throw new Error('No phone linking flow is active');
    if (linking.inFlight) await linking.inFlight;
    clearLinkTimer();
    linking.code = null;
    try {
      return await generateLinkDeviceCode();
    } catch (error) {
      emit('conn.link_code_error', error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
  }

  function cancelLinkDeviceCode() {
    linking.epoch++;
    clearLinkTimer();
    Object.assign(linking, { code: null, inFlight: null, phone: null, refreshCount: 0, push: true });
  }

  // ---- window.WPP -----------------------------------------------------------------------

  const WPP = {
    get isReady() {
      return state.ready;
    },
    loader: {
      get isReady() {
        return state.ready;
      },
      // src/loader/index.ts L51-55: a listener registered after readiness never fires.
      onReady(listener, delay = 0) {
        if (!state.ready) readyListeners.push(() => setTimeout(listener, delay));
      },
    },
    on(name, listener) {
      listeners.set(name, [...(listeners.get(name) || []), listener]);
      return WPP;
    },
    off(name, listener) {
      listeners.set(name, (listeners.get(name) || []).filter((l) => l !== listener));
      return WPP;
    },
    conn: {
      // src/conn/functions/getAuthCode.ts L34-50: null when there is no ref, or once
      // authenticated or registered.
      getAuthCode: async () => (state.authenticated || state.registered ? null : state.authCode),
      // src/conn/functions/refreshQR.ts calls Cmd.refreshQR(), which current WhatsApp Web no
      // longer has: the QR's own reload button is the way to a new code.
      refreshQR: async () => {
        throw new TypeError("Cannot read properties of undefined (reading 'refreshQR')");
      },
      isAuthenticated: () => state.authenticated,
      isRegistered: () => state.registered,
      isOnline: () => state.online,
      // src/conn/functions/setKeepAlive.ts: synchronous, returns whether it is on.
      setKeepAlive: (enable = true) => {
        state.keepAlive = Boolean(enable);
        if (socket && socket.readyState === WebSocket.OPEN) send({ type: 'keep_alive', enable: state.keepAlive });
        return state.keepAlive;
      },
      getStreamData: () => ({ mode: state.mode, info: STREAM_INFO[state.mode] }),
      getMyUserId: () => {
        if (!state.widMd) return undefined;
        const [user, server] = state.widMd.split('@');
        return wid(`${user.split(':')[0]}@${server}`);
      },
      // src/conn/functions/getHistorySyncProgress.ts L42: inProgress = (realProgress || 0) < 100;
      // realProgress can stay null, so "in progress" never ends.
      getHistorySyncProgress: () => {
        const progress = state.mode === 'MAIN' ? state.syncProgress : 0;
        return { progress, paused: false, inProgress: (progress || 0) < 100 };
      },
      genLinkDeviceCodeForPhoneNumber,
      startLinkDeviceCodeForPhoneNumber,
      refreshLinkDeviceCode,
      cancelLinkDeviceCode,
      logout: async () => {
        await request('logout');
        await forgetLogin('user_initiated');
        reloadSoon();
        return true;
      },
    },
    chat: {
      find,
      generateMessageID,
      getMessageById,
      sendTextMessage,
      // src/chat/functions/archive.ts: {wid, archive}; "already archived" and chat_not_found throw.
      archive: async (chatId, archive = true) => {
        const result = await request('archive', { chatId: idOf(chatId), archive });
        return { wid: wid(result.wid), archive: result.archive };
      },
      list: async (options = {}) =>
        (await request('chat_list', { count: options.count })).map((raw) => ({ ...raw, id: wid(raw.id) })),
      // src/chat/functions/getMessages.ts: count 0 becomes 20; [] for a chat with no messages.
      getMessages: async (chatId, options = {}) =>
        (await request('get_messages', { chatId: idOf(chatId), count: options.count || 20 })).map(message),
    },
    contact: {
      list: async () => (await request('contact_list')).map(contactModel),
      // src/contact/functions/queryWidExists.ts L86-103: null for "not registered" AND for any
      // server error (here: the request failing while offline).
      queryWidExists: async (contactId) => {
        try {
          const found = await request('query_wid', { id: idOf(contactId) });
          return found && { wid: wid(found.wid), biz: found.biz, ...(found.lid && { lid: wid(found.lid) }) };
        } catch {
          return null;
        }
      },
    },
  };
  // WhatsApp's own modules as wa-js exposes them (WPP.whatsapp): the native number query
  // throws on a failed query where WPP.contact.queryWidExists answers null.
  WPP.whatsapp = {
    WidFactory: { createWid: (serialized) => wid(String(serialized)) },
    functions: {
      queryWidExists: async (contact) => {
        const found = await request('query_wid', { id: idOf(contact) });
        return found ? { wid: wid(found.wid), biz: found.biz } : null;
      },
    },
  };
  window.WPP = WPP;

  // The QR's reload button (WPPConnect clicks it: src/api/helpers/scrape-img-qr.ts).
  document.addEventListener('click', (event) => {
    if (event.target && event.target.closest && event.target.closest('#qr-reload')) {
      request('reload_qr').catch((error) => console.error(error));
    }
  });

  async function boot() {
    try {
      const login = await readLogin();
      if (login) Object.assign(state, { widMd: login.widMd, token: login.token, registered: true });
    } catch (error) {
      console.error('WhatsApp Web double: cannot read the login', error);
    }
    state.ready = true;
    for (const listener of readyListeners.splice(0)) listener();
    render();
    connect();
  }

  boot();
})();
