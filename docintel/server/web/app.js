// docintel's page: log in, upload, watch live, read, delete. Plain JavaScript, no build step.
//
// Safety rule for this file: text from the server (file names, analyses, errors)
// goes into the page through textContent only, never innerHTML.

const TOKEN = 'docintel.token'; // sessionStorage: kept for this tab only, sent in headers, never a cookie
const USER = 'docintel.user';
const RESUMABLE_OVER = 5 * 1024 * 1024; // bigger files go over tus, in pieces that can resume
const CHUNK = 1024 * 1024;
const EXPIRED = 'Your session expired; log in again.';

const $ = (id) => document.getElementById(id);
const rows = new Map(); // document id → {doc, tr, lastEventId, applied: [[id, status]], stages: [{status, at}]}
let token = sessionStorage.getItem(TOKEN);
let stream = null; // the port to the shared stream worker
let openId = null; // the document shown in the detail panel

// Tests read what the page applied, event by event (ids and statuses): nothing else is exposed.
window.docintel = { applied: (id) => rows.get(id)?.applied ?? [] };

class SessionEnded extends Error {}

// --- small helpers -------------------------------------------------------------------

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function statusBadge(status) {
  return el('span', status, 'status status-' + status);
}

function seconds(ms) {
  return ms < 10000 ? (ms / 1000).toFixed(1) + ' s' : Math.round(ms / 1000) + ' s';
}

function when(iso) {
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
}

function announce(text) {
  $('announce').textContent = text;
}

// The server's sentence for a refusal: {detail: {message}} or {errors: [{message}]}.
function serverMessage(body, fallback) {
  return body?.errors?.[0]?.message ?? body?.detail?.message ?? fallback;
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: 'Bearer ' + token, ...(options.headers ?? {}) },
  });
  if (response.status === 401) {
    const body = await response.json().catch(() => null);
    endSession(body?.detail?.code === 'token_expired' ? EXPIRED : 'Please log in again.');
    throw new SessionEnded();
  }
  return response;
}

// --- log in and out ------------------------------------------------------------------

function showLogin(message) {
  $('app-view').hidden = true;
  $('account').hidden = true;
  $('detail').hidden = true;
  $('login-view').hidden = false;
  $('login-message').textContent = message;
  $('username').focus();
}

function endSession(message) {
  sessionStorage.removeItem(TOKEN);
  token = null;
  if (stream) stream.postMessage({ type: 'bye' });
  stream = null;
  rows.clear();
  $('documents').tBodies[0].replaceChildren();
  showLogin(message);
}

async function logIn(event) {
  event.preventDefault();
  const username = $('username').value;
  let answer;
  try {
    answer = await fetch('/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password: $('password').value }),
    });
  } catch {
    $('login-message').textContent = 'The server could not be reached; try again.';
    return;
  }
  const body = await answer.json().catch(() => null);
  if (!answer.ok) {
    $('login-message').textContent = serverMessage(body, 'Logging in failed.');
    return;
  }
  $('password').value = '';
  token = body.access_token;
  sessionStorage.setItem(TOKEN, token);
  sessionStorage.setItem(USER, username);
  await start();
}

// --- the table of documents ----------------------------------------------------------

function stagesText(row) {
  const { stages, doc } = row;
  if (stages.length === 0) {
    // Listed before this page streamed: only the overall time is known (the detail has each step).
    const total = Date.parse(doc.updated_at) - Date.parse(doc.created_at);
    return doc.status === 'completed' || doc.status === 'failed' ? 'took ' + seconds(total) : '';
  }
  const parts = [];
  for (let i = 0; i < stages.length; i += 1) {
    const next = stages[i + 1];
    if (next) parts.push(stages[i].status + ' ' + seconds(next.at - stages[i].at));
    else if (stages[i].status !== 'completed' && stages[i].status !== 'failed') parts.push(stages[i].status + ' …');
  }
  return parts.join(' · ');
}

function renderRow(row) {
  const { doc } = row;
  if (!row.tr) {
    row.tr = el('tr');
    row.tr.dataset.id = doc.id;
    const open = el('button', doc.filename, 'link');
    open.type = 'button';
    open.addEventListener('click', () => openDetail(doc.id));
    const file = el('td', null, 'file');
    file.append(open);
    row.tr.append(file, el('td'), el('td', null, 'stages'), el('td', when(doc.created_at), 'when'));
    row.tr.cells[1].dataset.label = 'Status';
    row.tr.cells[2].dataset.label = 'Stages';
    row.tr.cells[3].dataset.label = 'Uploaded';
  }
  const [, statusCell, stagesCell] = row.tr.cells;
  statusCell.replaceChildren(statusBadge(doc.status));
  if (doc.status === 'failed' && doc.error) statusCell.append(el('div', doc.error, 'error-text'));
  stagesCell.textContent = stagesText(row);
  row.tr.dataset.status = doc.status;
  row.tr.classList.toggle('selected', openId === doc.id);
}

function addRow(doc, lastEventId, atTop) {
  const row = { doc, tr: null, lastEventId, applied: [], stages: [] };
  rows.set(doc.id, row);
  renderRow(row);
  const body = $('documents').tBodies[0];
  if (atTop) body.prepend(row.tr);
  else body.append(row.tr);
  $('empty').hidden = true;
  return row;
}

function removeRow(id) {
  const row = rows.get(id);
  if (row) row.tr.remove();
  rows.delete(id);
  $('empty').hidden = rows.size > 0;
}

// Load the list; returns the event id it reflects, where the stream must start.
async function loadList() {
  const answer = await api('/documents?limit=500');
  const body = await answer.json();
  rows.clear();
  $('documents').tBodies[0].replaceChildren();
  for (const doc of body.items) addRow(doc, body.last_event_id, false); // newest first, as listed
  $('empty').hidden = rows.size > 0;
  $('more').hidden = body.total <= body.items.length;
  $('more').textContent = `Showing the newest ${body.items.length} of ${body.total} documents.`;
  return body.last_event_id;
}

// Apply one status event. Rows keep the id of the last event applied: a replay
// after a reconnect, or an event the list already reflects, is ignored; a
// requeued document may go back to `pending`, so order by id, not by status.
function applyEvent(id, data) {
  let row = rows.get(data.document_id);
  if (!row) {
    const doc = {
      id: data.document_id, filename: data.filename, status: data.status,
      created_at: data.timestamp, updated_at: data.timestamp, error: null,
    };
    row = addRow(doc, 0, true);
  }
  if (id <= row.lastEventId) return;
  row.lastEventId = id;
  row.applied.push([id, data.status]);
  row.stages.push({ status: data.status, at: Date.parse(data.timestamp) });
  row.doc.status = data.status;
  row.doc.updated_at = data.timestamp;
  row.doc.error = data.error ?? null;
  renderRow(row);
  if (data.status === 'completed' || data.status === 'failed') announce(`${data.filename}: ${data.status}`);
  if (openId === data.document_id) openDetail(openId, false);
}

// --- the live stream, shared by every tab ----------------------------------------------

function showConnection(state) {
  const text = { connecting: 'Connecting…', reconnecting: 'Reconnecting…', ended: 'Not live' }[state] ?? '';
  $('connection').textContent = text;
}

function follow(after) {
  const user = sessionStorage.getItem(USER) ?? '';
  const url = '/web/stream-worker.js';
  let port;
  if (window.SharedWorker) {
    port = new SharedWorker(url, { name: 'docintel-stream:' + user }).port;
    port.start();
  } else {
    port = new Worker(url); // no SharedWorker: a stream of this tab's own
  }
  port.onmessage = async (event) => {
    const message = event.data;
    if (port !== stream) return; // from before a log-out
    if (message.type === 'status') applyEvent(message.id, message.data);
    else if (message.type === 'state') showConnection(message.state);
    else if (message.type === 'token') {
      token = message.token;
      sessionStorage.setItem(TOKEN, token);
    } else if (message.type === 'expired') endSession(EXPIRED);
    else if (message.type === 'gap') {
      // This tab's list is older than the shared stream's memory: list again.
      try {
        port.postMessage({ type: 'follow', token, after: await loadList() });
      } catch (error) {
        if (!(error instanceof SessionEnded)) throw error;
      }
    }
  };
  stream = port;
  port.postMessage({ type: 'follow', token, after });
}

// --- uploads ---------------------------------------------------------------------------

// XMLHttpRequest, not fetch: only it reports upload progress. Resolves with the
// request in every case (status 0 when the network failed).
function send(method, url, headers, body, onProgress) {
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    request.open(method, url);
    request.setRequestHeader('Authorization', 'Bearer ' + token);
    for (const [name, value] of Object.entries(headers)) request.setRequestHeader(name, value);
    if (onProgress) request.upload.onprogress = (event) => onProgress(event.loaded);
    request.onloadend = () => resolve(request);
    request.send(body);
  });
}

function parsed(request) {
  try {
    return JSON.parse(request.responseText);
  } catch {
    return null;
  }
}

function refusal(request) {
  if (request.status === 401) {
    endSession(parsed(request)?.detail?.code === 'token_expired' ? EXPIRED : 'Please log in again.');
    throw new SessionEnded();
  }
  if (request.status === 0) return { error: 'The server could not be reached.' };
  return { error: serverMessage(parsed(request), `Refused (HTTP ${request.status}).`) };
}

async function sendMultipart(file, onProgress) {
  const form = new FormData();
  form.append('files', file, file.name);
  const request = await send('POST', '/documents/upload', {}, form, onProgress);
  if (request.status === 201) return { document: parsed(request).documents[0] };
  return refusal(request);
}

function base64(text) {
  return btoa(Array.from(new TextEncoder().encode(text), (byte) => String.fromCharCode(byte)).join(''));
}

// tus 1.0 (README, "Resumable uploads"): create, then PATCH 1 MB pieces; after a
// network failure, ask the server (HEAD) where it is and go on from there.
async function sendResumable(file, onProgress) {
  const tus = { 'Tus-Resumable': '1.0.0' };
  const created = await send('POST', '/uploads/', {
    ...tus, 'Upload-Length': String(file.size), 'Upload-Metadata': 'filename ' + base64(file.name),
  }, null);
  if (created.status !== 201) return refusal(created);
  const url = created.getResponseHeader('Location');
  let offset = 0;
  let failures = 0;
  for (;;) {
    const piece = file.slice(offset, offset + CHUNK);
    const request = await send('PATCH', url, {
      ...tus, 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream',
    }, piece, (loaded) => onProgress(offset + loaded));
    if (request.status === 200) return { document: parsed(request) }; // the last piece: the document
    if (request.status === 204) {
      offset = Number(request.getResponseHeader('Upload-Offset'));
      failures = 0;
      continue;
    }
    if (request.status !== 0 || failures >= 5) return refusal(request);
    failures += 1;
    await new Promise((resolve) => setTimeout(resolve, 1000 * failures));
    const head = await send('HEAD', url, tus, null);
    if (head.status !== 200) return refusal(head);
    offset = Number(head.getResponseHeader('Upload-Offset'));
  }
}

async function uploadOne(file) {
  const item = el('li');
  const name = el('span', file.name, 'name');
  const bar = el('progress');
  bar.max = file.size || 1;
  bar.value = 0;
  bar.setAttribute('aria-label', 'Upload progress of ' + file.name);
  const message = el('p', 'Uploading…', 'message');
  item.append(name, bar, message);
  $('uploads').prepend(item);
  const onProgress = (loaded) => {
    bar.value = loaded;
  };
  let result;
  try {
    result = file.size > RESUMABLE_OVER ? await sendResumable(file, onProgress) : await sendMultipart(file, onProgress);
  } catch (error) {
    if (error instanceof SessionEnded) return;
    result = { error: String(error) };
  }
  if (result.error) {
    item.classList.add('refused');
    bar.hidden = true;
    message.textContent = 'Refused: ' + result.error;
    return;
  }
  bar.value = bar.max;
  item.classList.add('accepted');
  message.textContent = 'Accepted.';
  // The stream adds the row too; whichever comes first makes it.
  if (!rows.has(result.document.id)) addRow(result.document, 0, true);
}

function uploadAll(files) {
  for (const file of files) uploadOne(file);
}

// --- one document ----------------------------------------------------------------------

function fillList(id, items) {
  $(id).replaceChildren(...items.map((text) => el('li', text)));
}

async function openDetail(id, focus = true) {
  openId = id;
  let answer;
  try {
    answer = await api('/documents/' + encodeURIComponent(id));
  } catch (error) {
    if (error instanceof SessionEnded) return;
    throw error;
  }
  if (openId !== id) return; // another document was opened meanwhile
  if (answer.status === 404) {
    removeRow(id);
    closeDetail();
    return;
  }
  const doc = await answer.json();
  $('detail-heading').textContent = doc.filename;
  $('detail-status').replaceChildren(statusBadge(doc.status));
  $('detail-error').hidden = !doc.error;
  $('detail-error').textContent = doc.error ? 'Failed: ' + doc.error : '';
  const analysis = doc.analysis;
  $('detail-analysis').hidden = !analysis;
  if (analysis) {
    $('detail-summary').textContent = analysis.summary;
    fillList('detail-topics', analysis.key_topics);
    $('detail-sentiment').textContent = analysis.sentiment;
    fillList('detail-actions', analysis.action_items.length ? analysis.action_items : ['None found.']);
    $('detail-analyzer').textContent = analysis.analyzer;
    $('detail-model').textContent = analysis.model;
  }
  const history = doc.history.map((entry, i) => {
    const next = doc.history[i + 1];
    const took = next ? ` (${seconds(Date.parse(next.at) - Date.parse(entry.at))})` : '';
    return `${when(entry.at)} — ${entry.status}${took}${entry.detail ? ': ' + entry.detail : ''}`;
  });
  fillList('detail-history', history);
  $('detail').hidden = false;
  for (const row of rows.values()) row.tr.classList.toggle('selected', row.doc.id === id);
  if (focus) {
    $('detail-heading').focus();
    $('detail').scrollIntoView({ block: 'nearest' });
  }
}

function closeDetail() {
  const row = rows.get(openId);
  openId = null;
  $('detail').hidden = true;
  for (const other of rows.values()) other.tr.classList.remove('selected');
  row?.tr.querySelector('button').focus(); // back where the keyboard came from
}

function confirmDelete() {
  const id = openId;
  $('confirm-name').textContent = $('detail-heading').textContent;
  $('confirm').returnValue = '';
  $('confirm').showModal();
  $('confirm').addEventListener('close', async () => {
    if ($('confirm').returnValue !== 'delete') return;
    try {
      const answer = await api('/documents/' + encodeURIComponent(id), { method: 'DELETE' });
      if (answer.status === 204 || answer.status === 404) {
        closeDetail();
        removeRow(id);
        announce('Deleted.');
      }
    } catch (error) {
      if (!(error instanceof SessionEnded)) throw error;
    }
  }, { once: true });
}

// --- start -----------------------------------------------------------------------------

async function start() {
  if (!token) {
    showLogin('');
    return;
  }
  let after;
  try {
    after = await loadList();
  } catch (error) {
    if (error instanceof SessionEnded) return;
    throw error;
  }
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('account').hidden = false;
  $('who').textContent = sessionStorage.getItem(USER) ?? '';
  follow(after);
}

function wire() {
  $('login-form').addEventListener('submit', logIn);
  $('logout').addEventListener('click', () => endSession('You are logged out.'));
  $('files').addEventListener('change', (event) => {
    uploadAll(event.target.files);
    event.target.value = ''; // the same file can be chosen again
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    uploadAll(event.dataTransfer.files);
  });
  $('delete').addEventListener('click', confirmDelete);
  $('close-detail').addEventListener('click', closeDetail);
  // Tell the shared stream this tab is gone, so the last one to leave closes it.
  window.addEventListener('pagehide', () => stream?.postMessage({ type: 'bye' }));
  // Back from the back/forward cache after that goodbye: list and follow again.
  window.addEventListener('pageshow', (event) => {
    if (event.persisted && token) start();
  });
}

wire();
start();
