// chatd web client: the JSON protocol (docs/protocol.md) over one WebSocket.
// Everything another user sent is inserted with textContent, never as HTML.
"use strict";

const GAP_PAGE = 200;       // messages per gap request; a full page means "ask again"
const OLDER_PAGE = 50;      // messages per scroll-back page
const SEEN_PER_ROOM = 2000; // message keys remembered per room for de-duplication
const MAX_LINES = 3000;     // lines kept per view
const MAX_BACKOFF = 15000;  // ms between reconnect attempts, at most

const $ = (id) => document.getElementById(id);
const store = {
  get(key, dflt) {
    try { const v = localStorage.getItem("chatd." + key); return v === null ? dflt : JSON.parse(v); }
    catch (e) { return dflt; }
  },
  set(key, value) { try { localStorage.setItem("chatd." + key, JSON.stringify(value)); } catch (e) { /* private mode */ } },
};

// IRC's rfc1459 case mapping, as the server compares nicks and rooms.
function fold(name) {
  return name.toLowerCase().replace(/\[/g, "{").replace(/\]/g, "}").replace(/\\/g, "|").replace(/\^/g, "~");
}

const state = {
  ws: null, nick: "", wanted: "", registered: false, everWelcomed: false,
  views: new Map(), current: null, backoff: 1000, timer: null, closing: false,
  serverName: "",
};

// ---------------------------------------------------------------- views

function view(key, name, kind) {
  let v = state.views.get(key);
  if (!v) {
    const log = document.createElement("div");
    log.className = "log"; log.tabIndex = 0;
    log.setAttribute("role", "log");
    v = { key, name, kind, joined: false, members: [], topic: "", log, unread: 0, mentions: 0,
          lastMid: null, floorMid: null, oldestMid: null, seen: new Set(), seenOrder: [],
          held: null, loadingOlder: false, noMoreOlder: false };
    state.views.set(key, v);
    log.addEventListener("scroll", () => maybeOlder(v));
    renderRooms();
  }
  return v;
}
const roomKey = (name) => "#" + fold(name.slice(1));
const pmKey = (nick) => "@" + fold(nick);

function line(v, cls, parts, opts = {}) {
  const el = document.createElement("div");
  el.className = "line " + cls;
  if (opts.ts) {
    const t = document.createElement("span");
    t.className = "ts";
    const d = new Date(opts.ts * 1000);
    t.textContent = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    t.title = d.toLocaleString();
    el.appendChild(t);
  }
  for (const [pcls, text, color] of parts) {
    const s = document.createElement("span");
    s.className = pcls;
    s.textContent = text;
    if (color) s.style.color = color;
    el.appendChild(s);
  }
  const log = v.log;
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  if (opts.older) {
    const before = log.scrollHeight;
    log.insertBefore(el, opts.anchor || log.firstChild);
    log.scrollTop += log.scrollHeight - before;
  } else {
    log.appendChild(el);
    while (log.childElementCount > MAX_LINES) log.removeChild(log.firstChild);
    if (atBottom || opts.own) log.scrollTop = log.scrollHeight;
  }
  if (!opts.older && !opts.quiet && v !== currentView()) {
    v.unread++;
    if (opts.mention) v.mentions++;
    renderRooms();
  }
  return el;
}
const system = (v, text, cls = "system") => line(v, cls, [["text", text]], { quiet: true });
const currentView = () => state.views.get(state.current) || null;
function info(text, cls) { const v = currentView() || view("*", "server", "server"); system(v, text, cls); }

function nickColor(nick) {
  let h = 0;
  for (const c of fold(nick)) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return `hsl(${h % 360}, 60%, ${matchMedia("(prefers-color-scheme: dark)").matches ? 68 : 38}%)`;
}

function mentions(text) {
  if (!state.nick) return false;
  const esc = state.nick.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[^A-Za-z0-9_\\-\\[\\]\\\\^{}|])${esc}($|[^A-Za-z0-9_\\-\\[\\]\\\\^{}|])`, "i").test(text);
}

function showMessage(v, m, opts = {}) {
  const key = m.mid + "\u0000" + m.from + "\u0000" + m.text;
  if (v.seen.has(key)) return;
  v.seen.add(key); v.seenOrder.push(key);
  if (v.seenOrder.length > SEEN_PER_ROOM) v.seen.delete(v.seenOrder.shift());
  if (v.lastMid === null || m.mid > v.lastMid) v.lastMid = m.mid;
  if (v.oldestMid === null || m.mid < v.oldestMid) v.oldestMid = m.mid;
  const own = fold(m.from) === fold(state.nick);
  const mention = !own && !m.history && !opts.older && mentions(m.text);
  const cls = (m.action ? "action " : "") + (own ? "own" : mention ? "mention" : "");
  const parts = m.action
    ? [["nick", "* " + m.from, nickColor(m.from)], ["text", m.text]]
    : [["nick", m.from, nickColor(m.from)], ["text", m.text]];
  line(v, cls, parts, { ts: m.ts, older: opts.older, anchor: opts.anchor, own, mention, quiet: m.history });
  if (mention) notify(`${m.from} in ${v.name}`, m.text, v);
}

// ---------------------------------------------------------------- rendering

function renderRooms() {
  const ul = $("room-list");
  ul.replaceChildren();
  let index = 0;
  for (const v of state.views.values()) {
    if (v.kind === "server" && v.log.childElementCount === 0) continue;
    index++;
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = v.key === state.current ? "current" : "";
    if (v.key === state.current) b.setAttribute("aria-current", "page");
    const n = document.createElement("span");
    n.className = "name";
    n.textContent = v.kind === "pm" ? "@" + v.name : v.name;
    if (v.kind === "room" && !v.joined) n.classList.add("muted");
    b.appendChild(n);
    if (v.unread) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = String(v.unread);
      badge.title = `${v.unread} unread`;
      b.appendChild(badge);
    }
    if (v.mentions) {
      const badge = document.createElement("span");
      badge.className = "badge mention";
      badge.textContent = "@" + v.mentions;
      badge.title = `${v.mentions} mentioning you`;
      b.appendChild(badge);
    }
    b.title = index <= 9 ? `Alt+${index}` : "";
    b.addEventListener("click", () => { select(v.key); $("app").classList.remove("show-rooms"); $("say").focus(); });
    li.appendChild(b);
    ul.appendChild(li);
  }
  const total = [...state.views.values()].reduce((a, v) => a + v.mentions, 0);
  document.title = (total ? `(${total}) ` : "") + "chatd" + (state.serverName ? " - " + state.serverName : "");
}

function renderView() {
  const v = currentView();
  $("view-name").textContent = v ? (v.kind === "pm" ? "@" + v.name : v.name) : "";
  $("topic").textContent = v && v.kind === "room" ? v.topic : v && v.kind === "pm" ? "private conversation" : "";
  $("topic").title = $("topic").textContent;
  const section = document.querySelector(".view");
  const shown = v ? v.log : $("log");
  if (section.firstElementChild !== shown) section.replaceChild(shown, section.firstElementChild);
  renderMembers();
  shown.scrollTop = shown.scrollHeight;
  if (v) maybeOlder(v);
}

function renderMembers() {
  const v = currentView();
  const ul = $("member-list");
  ul.replaceChildren();
  const members = v && v.kind === "room" ? [...v.members].sort((a, b) => fold(a).localeCompare(fold(b))) : [];
  $("member-count").textContent = v && v.kind === "room" ? `${members.length} member${members.length === 1 ? "" : "s"}` : "";
  for (const m of members) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button"; b.className = "small"; b.textContent = m; b.style.color = nickColor(m);
    b.title = `Talk privately with ${m}`;
    b.addEventListener("click", () => { const p = view(pmKey(m), m, "pm"); select(p.key); $("say").focus(); });
    li.appendChild(b);
    ul.appendChild(li);
  }
}

function select(key) {
  if (!state.views.has(key)) return;
  state.current = key;
  const v = currentView();
  v.unread = 0; v.mentions = 0;
  renderRooms(); renderView();
}

// Infinite scroll-back: near the top of a room (or while it does not fill the screen),
// fetch the page of messages before the oldest one shown.
function maybeOlder(v) {
  if (v !== currentView() || v.kind !== "room" || v.joined !== true || v.loadingOlder) return;
  if (v.noMoreOlder || v.oldestMid === null || v.held !== null || v.log.scrollTop > 60) return;
  v.loadingOlder = true;
  history(v, "older", { before: v.oldestMid, limit: OLDER_PAGE });
}

// ---------------------------------------------------------------- connection

function wsURL() { return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws"; }

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) { state.ws.send(JSON.stringify(obj)); return true; }
  return false;
}

function connect() {
  clearTimeout(state.timer);
  setStatus("connecting…");
  let ws;
  try { ws = new WebSocket(wsURL()); } catch (e) { scheduleReconnect(); return; }
  state.ws = ws;
  ws.addEventListener("open", () => {
    const hello = { op: "hello", nick: state.wanted };
    const sp = $("server-password").value, ap = $("account-password").value;
    if (sp) hello.password = sp;
    if (ap) { hello.account = state.wanted; hello.account_password = ap; }
    send(hello);
  });
  ws.addEventListener("message", (ev) => {
    let f;
    try { f = JSON.parse(ev.data); } catch (e) { return; }
    if (f && typeof f === "object" && typeof f.type === "string") {
      try { handle(f); } catch (e) { console.error("bad frame", f, e); }
    }
  });
  ws.addEventListener("close", () => {
    if (state.ws !== ws) return;
    state.ws = null;
    const was = state.registered;
    state.registered = false;
    for (const v of state.views.values()) if (v.kind === "room" && v.joined) v.joined = "rejoin";
    if (state.closing) { setStatus("disconnected", true); return; }
    if (!state.everWelcomed) { showLogin(state.lastError || "Could not join (the server closed the connection)."); return; }
    if (was) info("disconnected from the server; reconnecting…", "error");
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  const wait = state.backoff;
  state.backoff = Math.min(state.backoff * 2, MAX_BACKOFF);
  setStatus(`reconnecting in ${Math.round(wait / 1000)} s`, true);
  state.timer = setTimeout(connect, wait);
}

function setStatus(text, bad = false) {
  const s = $("status");
  s.textContent = text;
  s.className = "status" + (bad ? " bad" : "");
}

function showLogin(error) {
  $("app").hidden = true; $("login").hidden = false;
  $("login-error").textContent = error || "";
  $("login-button").disabled = false;
  $("nick").focus();
}

// ---------------------------------------------------------------- frames

function handle(f) {
  const v = typeof f.room === "string" ? state.views.get(roomKey(f.room)) : null;
  switch (f.type) {
    case "welcome": return onWelcome(f);
    case "joined": return onJoined(f);
    case "history_end": {
      if (v && v.lastMid === null && v.floorMid === null) history(v, "floor", { limit: 1 });
      if (v) maybeOlder(v);
      return;
    }
    case "msg": {
      const r = v || view(roomKey(f.room), f.room, "room");
      if (r.held !== null) { r.held.push(f); return; }
      return showMessage(r, f);
    }
    case "history": return onHistory(f);
    case "privmsg": {
      const own = fold(f.from) === fold(state.nick);
      const other = own ? f.to : f.from;
      const p = view(pmKey(other), other, "pm");
      const parts = f.action ? [["nick", "* " + f.from, nickColor(f.from)], ["text", f.text]]
                             : [["nick", f.from, nickColor(f.from)], ["text", f.text]];
      line(p, (f.action ? "action " : "") + (own ? "own" : "mention"), parts, { ts: f.ts, own, mention: !own });
      if (!own) notify(`${f.from} (private)`, f.text, p);
      return;
    }
    case "join": {
      if (!v) return;
      if (!v.members.some((m) => fold(m) === fold(f.nick))) v.members.push(f.nick);
      system(v, `${f.nick} joined ${v.name}`);
      if (v === currentView()) renderMembers();
      return;
    }
    case "part": {
      if (!v) return;
      if (fold(f.nick) === fold(state.nick)) {
        v.joined = false; v.members = [];
        system(v, `you left ${v.name}`);
        saveRooms(); renderRooms();
      } else {
        v.members = v.members.filter((m) => fold(m) !== fold(f.nick));
        system(v, `${f.nick} left ${v.name}` + (f.reason ? ` (${f.reason})` : ""));
      }
      if (v === currentView()) renderMembers();
      return;
    }
    case "quit": {
      for (const r of state.views.values()) {
        if (r.kind === "room" && r.members.some((m) => fold(m) === fold(f.nick))) {
          r.members = r.members.filter((m) => fold(m) !== fold(f.nick));
          system(r, `${f.nick} quit` + (f.reason ? ` (${f.reason})` : ""));
        }
      }
      renderMembers();
      return;
    }
    case "nick": {
      const mine = fold(f.old) === fold(state.nick);
      if (mine) { state.nick = f.new; state.wanted = f.new; store.set("nick", f.new); }
      for (const r of state.views.values()) {
        if (r.kind === "room" && r.members.some((m) => fold(m) === fold(f.old))) {
          r.members = r.members.map((m) => (fold(m) === fold(f.old) ? f.new : m));
          system(r, mine ? `you are now known as ${f.new}` : `${f.old} is now known as ${f.new}`);
        }
      }
      if (mine && !currentView()) info(`you are now known as ${f.new}`);
      renderMembers();
      return;
    }
    case "topic": {
      if (!v) return;
      v.topic = f.topic || "";
      system(v, f.by ? `${f.by} set the topic: ${v.topic}` : v.topic ? `topic: ${v.topic}` : "no topic is set");
      if (v === currentView()) renderView();
      return;
    }
    case "who": return info(`${f.room}: ${(f.members || []).join(", ")}`);
    case "rooms": return info("rooms: " + (f.rooms || []).map((r) => `${r.room} (${r.members})` + (r.topic ? ` - ${r.topic}` : "")).join("; "));
    case "whois": return info(`${f.nick}: in ${(f.rooms || []).join(", ") || "no room"}` + (f.away ? `; away: ${f.away}` : ""));
    case "away": return info(f.away ? "you are marked as away" : "you are back");
    case "notice": return info(f.text || "");
    case "skipped": {
      info(`${f.count} messages were skipped while the connection was slow; fetching them`, "error");
      for (const r of state.views.values()) if (r.kind === "room" && r.joined === true) startGap(r);
      return;
    }
    case "shutdown": return info(`server: ${f.reason || "shutting down"}`, "error");
    case "account": return info(`account ${f.account || ""}: ${f.event}`);
    case "error": return onError(f);
    default: return; // unknown types are ignored (docs/protocol.md)
  }
}

function onWelcome(f) {
  state.registered = true;
  state.backoff = 1000;
  state.nick = f.nick;
  state.serverName = f.server || "";
  store.set("nick", f.nick);
  setStatus(`${f.nick} on ${state.serverName}`);
  const first = !state.everWelcomed;
  state.everWelcomed = true;
  $("login").hidden = true; $("app").hidden = false;
  if (first) {
    const sv = view("*", state.serverName || "server", "server");
    for (const m of f.motd || []) system(sv, m);
    const rooms = store.get("rooms", ["#lobby"]);
    for (const name of rooms.length ? rooms : ["#lobby"]) send({ op: "join", room: name });
    $("say").focus();
  } else {
    info("reconnected");
    for (const r of state.views.values()) if (r.kind === "room" && r.joined) send({ op: "join", room: r.name });
  }
  renderRooms();
}

function onJoined(f) {
  const v = view(roomKey(f.room), f.room, "room");
  v.name = f.room;
  const rejoin = v.lastMid !== null || v.floorMid !== null;
  v.joined = true;
  v.members = Array.isArray(f.members) ? f.members.filter((m) => typeof m === "string") : [];
  v.topic = typeof f.topic === "string" ? f.topic : "";
  const n = v.members.length;
  system(v, `you joined ${v.name} (${n} member${n === 1 ? "" : "s"})` + (v.topic ? `; topic: ${v.topic}` : ""));
  if (rejoin) startGap(v);          // the replay is held and merged with exactly the gap
  if (!state.current || state.pendingSelect === v.key || !state.views.get(state.current).joined) {
    state.pendingSelect = null;
    select(v.key);
  }
  saveRooms(); renderRooms();
  if (v === currentView()) renderView();
}

function startGap(v) {
  const after = v.lastMid !== null ? v.lastMid : v.floorMid;
  if (after === null) return;
  v.held = [];
  history(v, "gap", { after, limit: GAP_PAGE });
}

function history(v, purpose, fields) {
  send({ op: "history", room: v.name, id: purpose + ":" + v.key, ...fields });
}

function onHistory(f) {
  const id = typeof f.id === "string" ? f.id : "";
  const purpose = id.split(":")[0];
  const v = state.views.get(roomKey(f.room));
  if (!v) return;
  const msgs = (Array.isArray(f.messages) ? f.messages : [])
    .filter((m) => m && typeof m.mid === "number" && typeof m.from === "string" && typeof m.text === "string")
    .sort((a, b) => a.mid - b.mid);
  if (purpose === "floor") {
    if (v.floorMid === null) v.floorMid = msgs.length ? msgs[msgs.length - 1].mid : 0;
    return;
  }
  if (purpose === "gap" && v.held !== null) {
    v.held.push(...msgs);
    const full = msgs.length >= GAP_PAGE || (f.more === true && msgs.length > 0);  // a cut page
    if (full) { history(v, "gap", { after: msgs[msgs.length - 1].mid, limit: GAP_PAGE }); return; }
    const held = v.held.sort((a, b) => a.mid - b.mid);
    v.held = null;
    for (const m of held) showMessage(v, { ...m, history: false }, { });
    return;
  }
  if (purpose === "older") {
    v.loadingOlder = false;
    if ((msgs.length < OLDER_PAGE && f.more !== true) || msgs.length === 0) v.noMoreOlder = true;
    if (typeof f.start === "number" && msgs.length && msgs[0].mid <= f.start) v.noMoreOlder = true;
    const anchor = v.log.firstChild;
    for (const m of msgs) showMessage(v, m, { older: true, anchor });
    if (!v.noMoreOlder) setTimeout(() => maybeOlder(v), 0);
    if (v.noMoreOlder) {
      const mark = document.createElement("div");
      mark.className = "marker"; mark.textContent = `the beginning of ${v.name}`;
      v.log.insertBefore(mark, v.log.firstChild);
    }
  }
}

function onError(f) {
  const msg = typeof f.message === "string" ? f.message : f.code;
  if (!state.registered) {
    state.lastError = msg;
    if (f.code === "nick_taken" && state.everWelcomed) {   // our old self, not yet gone
      state.wanted = state.wanted.slice(0, 23) + "_";
      send({ op: "hello", nick: state.wanted });
      return;
    }
    if (["bad_nick", "nick_taken", "bad_password", "bad_login", "nick_registered"].includes(f.code)) {
      state.closing = true;
      if (state.ws) state.ws.close();
      showLogin(msg);
      return;
    }
  }
  if (f.code === "history_off" && typeof f.id === "string") {
    const v = state.views.get(f.id.slice(f.id.indexOf(":") + 1));
    if (v) { v.held && flushHeld(v); v.noMoreOlder = true; }
    return;
  }
  info(msg, "error");
}

function flushHeld(v) {
  const held = (v.held || []).sort((a, b) => a.mid - b.mid);
  v.held = null;
  for (const m of held) showMessage(v, m);
}

function saveRooms() {
  store.set("rooms", [...state.views.values()].filter((v) => v.kind === "room" && v.joined).map((v) => v.name));
}

// ---------------------------------------------------------------- notifications

function notify(title, body, v) {
  if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
  if (!document.hidden && v === currentView()) return;
  try {
    const n = new Notification(title, { body: body.slice(0, 200), tag: v.key });
    n.onclick = () => { window.focus(); select(v.key); };
  } catch (e) { /* some mobile browsers only notify from a service worker */ }
}

// ---------------------------------------------------------------- input

const HELP = [
  "/join #room   /part [reason]   /msg nick text   /me does something",
  "/nick newnick   /topic [new topic]   /away [message]   /who [#room]",
  "/whois nick   /rooms   /query nick   /close   /quit [reason]",
];

function command(text) {
  const v = currentView();
  if (!text.startsWith("/") || text.startsWith("//")) {
    const body = text.startsWith("//") ? text.slice(1) : text;
    if (!v || v.kind === "server") return info("join a room first: /join #room", "error");
    if (v.kind === "pm") return send({ op: "msg", to: v.name, text: body });
    return send({ op: "say", room: v.name, text: body });
  }
  const [, cmd, rest = ""] = text.match(/^\/(\S+)\s*([\s\S]*)$/) || [];
  const arg = rest.trim();
  const first = arg.split(/\s+/)[0] || "";
  const after = arg.slice(first.length).trim();
  const room = v && v.kind === "room" ? v.name : null;
  switch ((cmd || "").toLowerCase()) {
    case "join": case "j": {
      if (!first) return info("usage: /join #room", "error");
      const name = first.startsWith("#") ? first : "#" + first;
      state.pendingSelect = roomKey(name);
      return send({ op: "join", room: name });
    }
    case "part": case "leave":
      if (!room) return info("not in a room", "error");
      return send({ op: "part", room, reason: arg || undefined });
    case "me":
      if (!v || v.kind === "server") return info("join a room first", "error");
      if (v.kind === "pm") return send({ op: "msg", to: v.name, text: arg, action: true });
      return send({ op: "me", room, text: arg });
    case "msg": case "query": {
      if (!first) return info(`usage: /${cmd} nick [text]`, "error");
      const p = view(pmKey(first), first, "pm");
      select(p.key);
      if (after) send({ op: "msg", to: first, text: after });
      return;
    }
    case "nick": return first ? send({ op: "nick", nick: first }) : info("usage: /nick newnick", "error");
    case "topic":
      if (!room) return info("not in a room", "error");
      return arg ? send({ op: "topic", room, topic: arg }) : send({ op: "topic", room });
    case "away": return send({ op: "away", message: arg });
    case "back": return send({ op: "away", message: "" });
    case "who": return (first || room) ? send({ op: "who", room: first || room }) : info("usage: /who #room", "error");
    case "whois": return first ? send({ op: "whois", nick: first }) : info("usage: /whois nick", "error");
    case "rooms": case "list": return send({ op: "rooms" });
    case "close":
      if (!v || v.kind === "server") return;
      if (v.kind === "room" && v.joined) send({ op: "part", room: v.name });
      state.views.delete(v.key);
      state.current = [...state.views.keys()].pop() || null;
      saveRooms(); renderRooms(); renderView();
      return;
    case "quit":
      state.closing = true;
      send({ op: "quit", reason: arg || undefined });
      setStatus("disconnected", true);
      return;
    case "help": return HELP.forEach((h) => info(h));
    default: return info(`unknown command /${cmd}; /help lists them`, "error");
  }
}

function moveView(step) {
  const keys = [...state.views.keys()].filter((k) => k !== "*" || state.views.get(k).log.childElementCount);
  if (!keys.length) return;
  const i = keys.indexOf(state.current);
  select(keys[(i + step + keys.length) % keys.length]);
}

function setup() {
  $("login-server").textContent = `on ${location.host}`;
  $("nick").value = store.get("nick", "");
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const nick = $("nick").value.trim();
    if (!nick) return;
    state.wanted = nick; state.closing = false; state.everWelcomed = false; state.lastError = "";
    $("login-error").textContent = "";
    $("login-button").disabled = true;
    connect();
  });
  $("say-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const box = $("say");
    const text = box.value.replace(/^\n+|\n+$/g, "");
    if (!text.trim()) return;
    if (!state.registered) { info("not connected; your message was kept in the box", "error"); return; }
    command(text);
    box.value = ""; box.rows = 1;
  });
  $("say").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); $("say-form").requestSubmit(); }
  });
  $("say").addEventListener("input", () => { const b = $("say"); b.rows = Math.min(6, b.value.split("\n").length); });
  $("join-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("join-room").value.trim();
    if (name) command("/join " + name);
    $("join-room").value = "";
    $("app").classList.remove("show-rooms");
  });
  $("toggle-rooms").addEventListener("click", () => { $("app").classList.toggle("show-rooms"); $("app").classList.remove("show-members"); });
  $("toggle-members").addEventListener("click", () => { $("app").classList.toggle("show-members"); $("app").classList.remove("show-rooms"); });
  $("notify").addEventListener("click", async () => {
    if (typeof Notification === "undefined") { info("this browser has no notifications", "error"); return; }
    const p = await Notification.requestPermission();
    info(p === "granted" ? "notifications on for mentions and private messages" : "notifications are off");
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.altKey && (ev.key === "ArrowUp" || ev.key === "ArrowDown")) { ev.preventDefault(); moveView(ev.key === "ArrowUp" ? -1 : 1); }
    else if (ev.altKey && /^[1-9]$/.test(ev.key)) {
      ev.preventDefault();
      const keys = [...state.views.keys()].filter((k) => k !== "*" || state.views.get(k).log.childElementCount);
      if (keys[+ev.key - 1]) select(keys[+ev.key - 1]);
    } else if (ev.key === "Escape") { $("app").classList.remove("show-rooms", "show-members"); $("say").focus(); }
  });
  if ($("nick").value) $("nick").select();
}

document.addEventListener("DOMContentLoaded", setup);
