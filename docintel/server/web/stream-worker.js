// One event stream for every tab of a user: a SharedWorker holding one EventSource.
//
// A browser opens at most 6 HTTP/1.1 connections per host; six tabs each holding
// a stream would leave none for anything else and freeze the site. So the tabs
// connect here (one worker per user: the tab names it) and this worker holds the
// only stream, passes each event to every tab, and keeps the events it has seen
// so that a tab opened later gets those after its own list.
//
// Messages from a tab:  {type: 'follow', token, after}   after = the list's last_event_id
//                       {type: 'token', token}           a newer token (a new login)
//                       {type: 'bye'}                     the tab is going away
// Messages to tabs:     {type: 'status', id, data}        one status event
//                       {type: 'state', state}            'connecting' | 'live' | 'reconnecting' | 'ended'
//                       {type: 'token', token}            refreshed after the stream said `reauth`
//                       {type: 'expired'}                 the token can no longer be refreshed
//                       {type: 'gap'}                     list again: your list is older than this stream

const KEEP = 5000; // events kept for tabs that join later
const ports = new Set();
const seen = []; // {type: 'status', id, data}, oldest first
let token = null;
let source = null;
let floor = null; // every event after this id is in `seen` (or is still to come)
let position = null; // the last event id the stream gave: where to resume
let state = 'connecting';
let retryDelay = 1000;

function send(message) {
  for (const port of ports) port.postMessage(message);
}

function setState(next) {
  state = next;
  send({ type: 'state', state });
}

function open(after) {
  const query = new URLSearchParams({ access_token: token });
  if (after !== null) query.set('last_event_id', String(after));
  // ?access_token= because EventSource cannot send headers; the server keeps
  // it out of its access log. When the browser reconnects by itself it sends
  // Last-Event-ID, which the server prefers to the id in this URL.
  source = new EventSource('/documents/stream?' + query);
  source.onopen = () => {
    retryDelay = 1000;
    setState('live');
  };
  source.onerror = () => {
    // CONNECTING: the browser retries by itself. CLOSED: the server refused the
    // stream (an expired token after a long outage, too many streams): renew.
    if (source.readyState === EventSource.CLOSED) renew();
    else setState('reconnecting');
  };
  source.addEventListener('status', (event) => {
    const message = { type: 'status', id: Number(event.lastEventId), data: JSON.parse(event.data) };
    position = message.id;
    seen.push(message);
    if (seen.length > KEEP) floor = seen.shift().id;
    send(message);
  });
  // The stream ends shortly before its token expires: refresh, resume after its id.
  source.addEventListener('reauth', (event) => {
    position = Number(event.lastEventId);
    renew();
  });
}

async function renew() {
  if (source) source.close();
  source = null;
  setState('reconnecting');
  let answer = null;
  try {
    answer = await fetch('/auth/refresh', { method: 'POST', headers: { Authorization: 'Bearer ' + token } });
  } catch {
    // the server is unreachable: try again, a little later each time
  }
  if (answer && answer.status === 401) {
    setState('ended');
    send({ type: 'expired' });
    return;
  }
  if (!answer || !answer.ok) {
    retryDelay = Math.min(retryDelay * 2, 30000);
    setTimeout(renew, retryDelay);
    return;
  }
  token = (await answer.json()).access_token;
  send({ type: 'token', token });
  open(position);
}

function follow(port, message) {
  if (message.token) token = message.token;
  if (source === null && state !== 'reconnecting') {
    seen.length = 0; // a fresh stream: from this tab's list on
    floor = message.after;
    position = message.after;
    open(message.after);
  }
  if (message.after < floor) {
    port.postMessage({ type: 'gap' });
    return;
  }
  for (const event of seen) if (event.id > message.after) port.postMessage(event);
  port.postMessage({ type: 'state', state });
}

function connect(port) {
  ports.add(port);
  port.onmessage = (event) => {
    const message = event.data;
    if (message.type === 'follow') follow(port, message);
    else if (message.type === 'token') token = message.token;
    else if (message.type === 'bye') {
      ports.delete(port);
      if (ports.size === 0 && source) {
        // the last tab left: free the server's stream; a new tab starts afresh
        source.close();
        source = null;
        seen.length = 0;
        state = 'connecting';
      }
    }
  };
}

if ('onconnect' in self) {
  self.onconnect = (event) => connect(event.ports[0]); // SharedWorker: one port per tab
} else {
  connect(self); // a dedicated Worker (browsers without SharedWorker): one tab
}
