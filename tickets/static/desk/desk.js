// The desk's one script: the inbox (/desk/) and a ticket's page (/desk/tickets/<id>/), live over the
// WebSocket protocol of SPEC §4. The client rules (resume, reconnect, what is dropped) are described in
// docs/architecture.md, "The desk's pages". Whatever a customer or an agent wrote reaches the page as
// text (textContent / Text nodes), never as HTML.

const body = document.body;
const me = Number(body.dataset.userId);

const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 15000;
const TYPING_REFRESH_MS = 3000; // send "start" again this often while typing
const TYPING_IDLE_MS = 5000; // no keystroke for this long: "stop"
const TEXT_LIMIT = 4096;

// --- Helpers -----------------------------------------------------------------------------------------

// An element with attributes and children; strings become Text nodes, so they are never parsed as HTML.
function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

// A version 4 UUID; crypto.randomUUID exists only on HTTPS and localhost pages.
function uuid4() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const calendar = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });

function shortTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toDateString() === new Date().toDateString() ? clock.format(date) : calendar.format(date);
}

function fullTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

const STATUS_LABELS = { open: "Open", pending: "Pending", resolved: "Resolved", closed: "Closed" };

function statusBadge(status) {
  return h("span", { class: `status status--${status}` }, STATUS_LABELS[status] || status);
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) goToLogin();
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

// POST a form's fields; resolves to {ok, data}, where data.error says why a refusal was made.
async function post(url, fields) {
  try {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": body.dataset.csrfToken, Accept: "application/json" },
      body: new URLSearchParams(fields),
    });
    if (response.status === 401) goToLogin();
    const data = await response.json().catch(() => ({ error: `The server answered ${response.status}.` }));
    return { ok: response.ok, data };
  } catch {
    return { ok: false, data: { error: "The server could not be reached; try again." } };
  }
}

function goToLogin() {
  const next = encodeURIComponent(location.pathname + location.search);
  location.assign(`${body.dataset.loginUrl}?next=${next}`);
}

// --- The live connection -----------------------------------------------------------------------------

// One WebSocket that comes back by itself: exponential backoff with full jitter, shown in the top bar.
class LiveSocket {
  constructor(path, { onOpen, onEvent, onClose = () => {} }) {
    this.path = path;
    this.onOpen = onOpen;
    this.onEvent = onEvent;
    this.onClose = onClose;
    this.attempt = 0;
    this.socket = null;
    this.timer = null;
    this.indicator = document.getElementById("connection");
    window.addEventListener("online", () => this.retryNow());
  }

  connect() {
    this.timer = null;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}${this.path}`);
    this.socket = socket;
    if (this.attempt === 0) this.show("connecting", "Connecting…");
    socket.addEventListener("open", () => {
      this.attempt = 0;
      this.show("live", "Live");
      this.onOpen();
    });
    socket.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (socket === this.socket) this.onEvent(event);
    });
    socket.addEventListener("close", (close) => this.closed(socket, close.code));
  }

  closed(socket, code) {
    if (socket !== this.socket) return;
    this.socket = null;
    if (code === 4401) return goToLogin();
    if (code === 4403) return this.show("refused", "Not an agent");
    if (code === 4404) return this.show("refused", "No such ticket");
    this.show("reconnecting", "Reconnecting…");
    this.onClose();
    const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** this.attempt);
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), Math.random() * ceiling);
  }

  // Waiting to reconnect (the network is back): do it now.
  retryNow() {
    if (this.socket || !this.timer) return;
    clearTimeout(this.timer);
    this.connect();
  }

  // Start over on a fresh socket (a gap in the events): the close handler reconnects.
  startOver() {
    this.socket?.close(4000, "starting over");
  }

  send(frame) {
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  show(state, label) {
    if (!this.indicator) return;
    this.indicator.hidden = false;
    this.indicator.className = `connection connection--${state}`;
    this.indicator.textContent = label;
  }
}

// --- The inbox ---------------------------------------------------------------------------------------

function startInbox() {
  const list = document.getElementById("ticket-list");
  const empty = document.getElementById("inbox-empty");
  const more = document.getElementById("inbox-more");
  const { source, view, status } = list.dataset;
  const statuses = list.dataset.statuses.split(" ").filter(Boolean);
  const rows = new Map(); // ticket id -> {data, node}
  const fetching = new Map(); // ticket id -> live events that arrived while its row was being fetched
  let loading = null; // live events that arrived while the list was loading, or null
  let next = null;

  const filter = document.getElementById("status-filter");
  filter.querySelector("select").addEventListener("change", () => filter.submit());
  more.addEventListener("click", () => loadMore());

  // Without a live connection the list still loads once; every (re)connect reloads it.
  let loaded = false;
  const socket = new LiveSocket("/ws/inbox/", { onOpen: reload, onEvent, onClose: () => loaded || reload() });
  socket.connect();

  function query(extra = {}) {
    return `${source}?${new URLSearchParams({ view, status, ...extra })}`;
  }

  // On every (re)connect: the socket is subscribed first, then the list loads, then the live events
  // that came meanwhile apply unless the loaded list already reflects them (their seq).
  // Reloads can overlap (a reconnect while the last one is still loading): only the newest applies, and
  // it reflects every event heard before it started.
  let reloads = 0;
  async function reload() {
    const generation = ++reloads;
    const waiting = (loading = []);
    try {
      const data = await getJSON(query());
      if (generation !== reloads) return;
      rows.clear();
      list.replaceChildren();
      for (const ticket of data.tickets) place(ticket, true);
      next = data.next;
      loaded = true;
    } catch {
      // The socket will reconnect and reload; keep what is shown.
    } finally {
      if (generation === reloads) {
        loading = null;
        waiting.forEach(apply);
        refresh();
      }
    }
  }

  async function loadMore() {
    if (!next) return;
    more.disabled = true;
    try {
      const data = await getJSON(query({ before: next }));
      for (const ticket of data.tickets) if (!rows.has(ticket.id)) place(ticket, true);
      next = data.next;
    } finally {
      more.disabled = false;
      refresh();
    }
  }

  function onEvent(event) {
    if (loading) loading.push(event);
    else apply(event);
  }

  function apply(event) {
    const id = event.ticket_id;
    if (!id || typeof event.seq !== "number") return;
    if (fetching.has(id)) return fetching.get(id).push(event);
    const row = rows.get(id);
    if (!row) {
      if (event.type === "ticket" || event.type === "message") fetchRow(id, event);
      return;
    }
    // The row as the server read it shows every event up to its seq. Later events can arrive out of order
    // (each server process broadcasts after its own commit): each is applied once, a late message still
    // counts, and the ticket's state only moves forward.
    const data = row.data;
    data.fetchedSeq ??= data.seq;
    data.stateSeq ??= data.seq;
    data.applied ??= new Set();
    if (event.seq <= data.fetchedSeq || data.applied.has(event.seq)) return;
    data.applied.add(event.seq);
    data.seq = Math.max(data.seq, event.seq);
    let moved = false;
    if (event.type === "message") {
      const message = event.message;
      if (!data.last_message || message.id > data.last_message.id) {
        data.last_message = preview(message);
        data.last_message_at = message.created_at;
        moved = true;
      } else if (message.id === data.last_message.id) {
        data.last_message = preview(message); // an edit
      }
    } else if (event.type === "ticket" && event.seq > data.stateSeq) {
      Object.assign(data, event.ticket);
      data.stateSeq = event.seq;
    }
    if (typeof event.unread === "number") data.unread = event.unread;
    if (matches(data)) place(data, moved);
    else {
      row.node.remove();
      rows.delete(id);
    }
    refresh();
  }

  // A ticket the list does not show yet: ask the server for its row, if it is in this view.
  async function fetchRow(id, event) {
    fetching.set(id, [event]);
    let ticket = null;
    try {
      [ticket] = (await getJSON(query({ ticket: id }))).tickets;
    } catch {
      // Not shown now; the next reload brings it.
    }
    const waiting = fetching.get(id);
    fetching.delete(id);
    if (ticket && !rows.has(id)) place(ticket, true);
    waiting.forEach(apply);
    refresh();
  }

  function preview(message) {
    const author = message.author;
    return {
      id: message.id,
      direction: message.direction,
      text: message.text,
      attachment: message.attachment?.summary || (message.attachment ? message.attachment.kind : null),
      author: author ? author.name : null,
      mine: author?.id === me,
    };
  }

  function matches(ticket) {
    if (view === "mine" && ticket.assignee?.id !== me) return false;
    if (view === "unassigned" && ticket.assignee) return false;
    return statuses.length === 0 || statuses.includes(ticket.status);
  }

  // Show the ticket's row: in place, or (new, or with a new message) where the list's order puts it.
  function place(ticket, moved) {
    const old = rows.get(ticket.id);
    const node = renderRow(ticket);
    rows.set(ticket.id, { data: ticket, node });
    if (old && !moved) return old.node.replaceWith(node);
    old?.node.remove();
    const after = [...list.children].find((child) => comesBefore(ticket, rows.get(Number(child.dataset.ticketId)).data));
    list.insertBefore(node, after || null);
  }

  function comesBefore(a, b) {
    const at = a.last_message_at || "";
    const bt = b.last_message_at || "";
    if (at !== bt) return at > bt;
    return a.id > b.id;
  }

  function renderRow(ticket) {
    const last = ticket.last_message;
    let text = "No messages yet";
    if (last) {
      const content = last.text || last.attachment || "";
      if (last.direction === "in") text = content;
      else text = `${last.mine ? "You" : last.author || "Bot"}: ${content}`;
    }
    return h(
      "li",
      { class: `ticket-row${ticket.unread ? " ticket-row--unread" : ""}`, "data-ticket-id": ticket.id },
      h(
        "a",
        { class: "ticket-row__link", href: ticket.url },
        h("span", { class: "ticket-row__customer" }, ticket.customer.name),
        h("time", { class: "ticket-row__time", datetime: ticket.last_message_at, title: fullTime(ticket.last_message_at) }, shortTime(ticket.last_message_at)),
        h("span", { class: "ticket-row__preview" }, text),
        h(
          "span",
          { class: "ticket-row__badges" },
          ticket.unread ? h("span", { class: "badge", title: `${ticket.unread} unread` }, String(ticket.unread)) : null,
        ),
        h(
          "span",
          { class: "ticket-row__meta" },
          statusBadge(ticket.status),
          h("span", {}, `#${ticket.id}`),
          h("span", {}, ticket.assignee ? `· ${ticket.assignee.name}` : "· Unassigned"),
          ticket.subject ? h("span", { class: "ticket-row__subject" }, `· ${ticket.subject}`) : null,
        ),
      ),
    );
  }

  function refresh() {
    list.removeAttribute("aria-busy");
    empty.hidden = rows.size > 0;
    more.hidden = !next;
    const unread = [...rows.values()].filter((row) => row.data.unread > 0).length;
    document.title = `${unread ? `(${unread}) ` : ""}Inbox · Support desk`;
  }
}

// --- A ticket's page ---------------------------------------------------------------------------------

function startTicket() {
  const state = JSON.parse(document.getElementById("ticket-state").textContent);
  let ticket = state.ticket;
  let lastSeq = ticket.seq; // the latest event this page reflects
  let resuming = false;
  let lastReadSent = 0;
  const messages = new Map(); // id -> message
  const nodes = new Map(); // id -> its <li>
  const pending = new Map(); // client_msg_id -> {text, node}: sent, not yet confirmed by the server
  const reads = new Map(); // other agents' user id -> {user, message_id}
  const typists = new Map(); // user id -> {user, timer}

  const scroller = document.getElementById("chat-scroll");
  let followingEnd = true; // the agent is at the end of the conversation: keep them there
  scroller.addEventListener("scroll", () => (followingEnd = nearEnd()));
  const list = document.getElementById("messages");
  const typingLine = document.getElementById("typing");
  const composer = document.getElementById("composer");
  const textarea = composer.querySelector("textarea");
  const note = document.getElementById("composer-note");
  const statusSelect = document.getElementById("status-select");
  const assigneeSelect = document.getElementById("assignee-select");
  const ticketError = document.getElementById("ticket-error");
  const side = document.getElementById("side");
  side.open = window.matchMedia("(min-width: 900px)").matches;

  for (const message of state.messages) messages.set(message.id, message);
  for (const read of state.reads) if (read.user.id !== me) reads.set(read.user.id, read);
  for (const message of state.messages) list.append(renderMessage(message));
  markSeen();
  showTicket(ticket);
  scrollToEnd(true);

  const socket = new LiveSocket(`/ws/tickets/${ticket.id}/`, { onOpen, onEvent });
  socket.connect();

  // Every (re)connect asks for what happened since the last event this page has (G12).
  function onOpen() {
    resuming = true;
    socket.send({ type: "resume", after: lastSeq });
  }

  function onEvent(event) {
    switch (event.type) {
      case "typing":
        return showTyping(event);
      case "resumed":
        resuming = false;
        lastSeq = Math.max(lastSeq, event.seq);
        for (const [clientMsgId, entry] of pending) sendMessage(clientMsgId, entry.text);
        return markRead();
      case "resync":
        return location.reload();
      case "error":
        return showError(event);
    }
    if (typeof event.seq !== "number" || event.seq <= lastSeq) return; // already shown
    if (event.seq > lastSeq + 1) return socket.startOver(); // a gap: a fresh socket replays from lastSeq
    lastSeq = event.seq;
    if (event.type === "message") showMessage(event.message);
    else if (event.type === "delivery") showDelivery(event);
    else if (event.type === "ticket") showTicket(event.ticket);
    else if (event.type === "read") showRead(event);
  }

  // Messages

  function showMessage(message) {
    // An edit of a message older than those shown: the admin has it.
    if (!messages.has(message.id) && state.earlier && message.id < Math.min(...messages.keys())) return;
    const atEnd = followingEnd;
    const entry = message.client_msg_id && pending.get(message.client_msg_id);
    if (entry) {
      entry.node.remove();
      pending.delete(message.client_msg_id);
    }
    messages.set(message.id, message);
    const old = nodes.get(message.id);
    const node = renderMessage(message);
    if (old) old.replaceWith(node);
    else {
      const after = [...nodes.keys()].filter((id) => id > message.id).sort((a, b) => a - b)[0];
      list.insertBefore(node, after ? nodes.get(after) : list.querySelector(".message--pending"));
    }
    if (message.author) typingStopped(message.author.id);
    markSeen();
    scrollToEnd(atEnd || message.author?.id === me);
    markRead();
  }

  function showDelivery(event) {
    const message = messages.get(event.message_id);
    if (!message) return;
    message.delivery_status = event.status;
    message.delivery_error = event.error || null;
    delete state.waiting_for[message.id]; // its turn came
    const old = nodes.get(message.id);
    old.replaceWith(renderMessage(message));
    markSeen();
  }

  function renderMessage(message) {
    const outbound = message.direction === "out";
    const author = outbound ? message.author?.name || "Bot (automatic reply)" : state.ticket.customer.name;
    const node = h(
      "li",
      { class: `message message--${outbound ? "out" : "in"}`, id: `message-${message.id}`, "data-message-id": message.id },
      h(
        "div",
        { class: "message__meta" },
        `${author} · `,
        h("time", { datetime: message.created_at, title: fullTime(message.created_at) }, shortTime(message.created_at)),
        message.edited_at ? " · edited" : null,
      ),
      h("div", { class: "message__bubble" }, renderAttachment(message), message.text ? h("p", { class: "message__text" }, message.text) : null),
      outbound ? renderDelivery(message) : null,
    );
    nodes.set(message.id, node);
    return node;
  }

  function renderAttachment(message) {
    const attachment = message.attachment;
    if (!attachment) return null;
    const label = attachment.summary || attachment.kind || "Attachment";
    if (!attachment.file_id) return h("p", { class: "attachment attachment--info" }, label);
    const url = state.attachment_url.replace("{id}", message.id);
    if (attachment.kind === "photo" || attachment.kind === "sticker") {
      const image = h("img", { src: url, alt: label, width: attachment.width, height: attachment.height });
      image.addEventListener("load", () => scrollToEnd(followingEnd));
      return h("a", { class: "attachment attachment--image", href: url, target: "_blank", rel: "noopener" }, image);
    }
    return h("a", { class: "attachment attachment--file", href: url, download: true }, `⬇ ${label}`);
  }

  function renderDelivery(message) {
    const status = h("div", { class: "message__status" });
    if (message.delivery_status === "sent") status.append(h("span", { class: "tick tick--sent" }, "✓ Sent"));
    else if (message.delivery_status === "failed") {
      const reason = message.delivery_error || "unknown reason";
      const resend = h("button", { type: "button", class: "button button--small" }, "Re-send");
      resend.addEventListener("click", () => resendReply(message, resend));
      status.append(h("span", { class: "tick tick--failed" }, `⚠ Not delivered: ${reason}`), resend);
    } else if (message.delivery_error) {
      status.append(h("span", { class: "tick tick--queued" }, `◷ Queued, retrying: ${message.delivery_error}`));
    } else if (state.waiting_for[message.id]) {
      const note = `◷ Queued after reply #${state.waiting_for[message.id]} to this customer: replies go out in order`;
      status.append(h("span", { class: "tick tick--queued" }, note));
    } else status.append(h("span", { class: "tick tick--queued" }, "◷ Queued"));
    return status;
  }

  // The reply goes back to queued; the page hears of it, like every page, as a delivery event.
  async function resendReply(message, button) {
    button.disabled = true;
    const { ok, data } = await post(state.resend_url.replace("{id}", message.id), {});
    if (!ok) {
      button.disabled = false;
      showNote(data.error);
    }
  }

  // The composer: Enter sends, Shift+Enter is a new line.

  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  textarea.addEventListener("input", typed);
  textarea.addEventListener("blur", stopTyping);
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = textarea.value.trim();
    if (!text) return;
    if (text.length > TEXT_LIMIT) return showNote(`A reply can be at most ${TEXT_LIMIT} characters; this one has ${text.length}.`);
    const clientMsgId = uuid4();
    const node = renderPending(text);
    pending.set(clientMsgId, { text, node });
    list.append(node);
    scrollToEnd(true);
    textarea.value = "";
    typingSince = 0; // the server tells the others the typing stopped when the message arrives
    clearTimeout(typingIdle);
    showNote("");
    if (!resuming) sendMessage(clientMsgId, text);
  });

  // Sent again after every reconnect until the server's event with the same client_msg_id arrives:
  // the server stores a client_msg_id once, so a repeat is harmless.
  function sendMessage(clientMsgId, text) {
    socket.send({ type: "message", text, client_msg_id: clientMsgId });
  }

  function renderPending(text) {
    return h(
      "li",
      { class: "message message--out message--pending" },
      h("div", { class: "message__meta" }, `${state.me.name} · now`),
      h("div", { class: "message__bubble" }, h("p", { class: "message__text" }, text)),
      h("div", { class: "message__status" }, h("span", { class: "tick tick--pending" }, "Sending…")),
    );
  }

  function showNote(text) {
    note.textContent = text;
    note.hidden = !text;
  }

  // A refused reply (the server names its client_msg_id) stays on the page as not sent, until discarded.
  function showError(event) {
    const entry = event.client_msg_id && pending.get(event.client_msg_id);
    if (!entry) return showNote(event.detail || event.code || "The server refused that.");
    pending.delete(event.client_msg_id);
    const discard = h("button", { type: "button", class: "button button--small" }, "Discard");
    discard.addEventListener("click", () => entry.node.remove());
    entry.node.querySelector(".message__status").replaceChildren(
      h("span", { class: "tick tick--failed" }, `⚠ Not sent: ${event.detail}`),
      discard,
    );
  }

  // Typing, like Zulip: "start" while typing (refreshed), "stop" when done; the others expire it themselves.

  let typingSince = 0;
  let typingIdle = null;

  function typed() {
    if (!textarea.value.trim()) return stopTyping();
    const now = Date.now();
    if (now - typingSince > TYPING_REFRESH_MS && socket.send({ type: "typing", state: "start" })) typingSince = now;
    clearTimeout(typingIdle);
    typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    clearTimeout(typingIdle);
    if (typingSince) socket.send({ type: "typing", state: "stop" });
    typingSince = 0;
  }

  function showTyping(event) {
    if (!event.user || event.user.id === me) return;
    typingStopped(event.user.id);
    if (event.state === "start") {
      const timer = setTimeout(() => typingStopped(event.user.id), (event.expires_in || 6) * 1000);
      typists.set(event.user.id, { user: event.user, timer });
    }
    renderTyping();
  }

  function typingStopped(userId) {
    const typist = typists.get(userId);
    if (!typist) return;
    clearTimeout(typist.timer);
    typists.delete(userId);
    renderTyping();
  }

  function renderTyping() {
    const names = [...typists.values()].map((typist) => typist.user.name);
    typingLine.textContent = names.length ? `${names.join(" and ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
  }

  // Read state: what this agent saw is read; colleagues' positions show as "Seen by".

  function markRead() {
    if (document.visibilityState !== "visible" || resuming) return;
    const last = Math.max(0, ...messages.keys());
    if (last > lastReadSent && socket.send({ type: "read", message_id: last })) lastReadSent = last;
  }

  document.addEventListener("visibilitychange", markRead);

  function showRead(event) {
    if (event.user.id === me) lastReadSent = Math.max(lastReadSent, event.message_id);
    else {
      reads.set(event.user.id, { user: event.user, message_id: event.message_id });
      markSeen();
    }
  }

  function markSeen() {
    for (const old of list.querySelectorAll(".message__seen")) old.remove();
    const ids = [...messages.keys()].sort((a, b) => a - b);
    const seenAt = new Map(); // message id -> names of those whose cursor is at it
    for (const { user, message_id: upTo } of reads.values()) {
      const at = ids.filter((id) => id <= upTo).pop();
      if (at === undefined) continue;
      seenAt.set(at, [...(seenAt.get(at) || []), user.name]);
    }
    for (const [id, names] of seenAt) nodes.get(id).append(h("p", { class: "message__seen" }, `Seen by ${names.join(", ")}`));
  }

  // The ticket's status and assignee.

  statusSelect.addEventListener("change", () => change(document.getElementById("status-form"), { status: statusSelect.value }));
  assigneeSelect.addEventListener("change", () => change(document.getElementById("assignee-form"), { assignee: assigneeSelect.value }));
  document.getElementById("assign-me").addEventListener("click", () => {
    assigneeSelect.value = String(me);
    change(document.getElementById("assignee-form"), { assignee: me });
  });

  async function change(form, fields) {
    ticketError.hidden = true;
    const { ok, data } = await post(form.action, fields);
    if (ok) return showTicket(data.ticket);
    ticketError.textContent = data.error;
    ticketError.hidden = false;
    showTicket(ticket); // back to what the ticket is
  }

  function showTicket(summary) {
    if (summary.seq >= ticket.seq) ticket = summary;
    const badge = document.getElementById("ticket-status");
    badge.className = `status status--${ticket.status}`;
    badge.textContent = STATUS_LABELS[ticket.status] || ticket.status;
    statusSelect.value = ticket.status;
    const allowed = new Set([ticket.status, ...state.transitions[ticket.status]]);
    for (const option of statusSelect.options) option.disabled = !allowed.has(option.value);
    const assignee = ticket.assignee ? String(ticket.assignee.id) : "";
    if (![...assigneeSelect.options].some((option) => option.value === assignee)) {
      assigneeSelect.append(h("option", { value: assignee }, ticket.assignee.name));
    }
    assigneeSelect.value = assignee;
    const closed = ticket.status === "closed";
    textarea.disabled = closed;
    composer.querySelector("button").disabled = closed;
    textarea.placeholder = closed
      ? "This ticket is closed: the customer's next message opens a new one."
      : `Reply to ${ticket.customer.name} · Enter sends, Shift+Enter for a new line`;
  }

  // Scrolling: follow new messages (and pictures as they load) only when the agent is at the end.

  function nearEnd() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  }

  function scrollToEnd(really) {
    if (really) scroller.scrollTop = scroller.scrollHeight;
  }
}

if (body.dataset.page === "inbox") startInbox();
else if (body.dataset.page === "ticket") startTicket();
