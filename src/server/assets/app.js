// The page of `adain serve`: pick a photo and a style, move the sliders, get
// the painted photo. Previews at 256 px while a slider moves (debounced;
// a stale request is aborted), the full size once it stops. Webcam mode sends
// preview-size frames over a WebSocket and shows what comes back.
'use strict';

const $ = (id) => document.getElementById(id);
const PREVIEW = 256;

const state = {
  token: '',
  photo: null,       // the File
  preview: null,     // {blob, w, h} at PREVIEW px
  full: null,        // {blob, w, h} at the output size
  styleId: null,
  styleFile: null,
  inflight: null,    // 'preview' | 'full' | null
  controller: null,
  wantFull: false,
  previewTimer: 0,   // a preview is due (the slider moved)
  fullTimer: 0,      // the full size is due (things settled)
  resultURL: null,
  counts: { preview: 0, full: 0 },
  cam: null,
};

function setStatus(text) { $('status').textContent = text; }

function authHeaders() { return state.token ? { Authorization: 'Bearer ' + state.token } : {}; }

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: { ...authHeaders(), ...(opts.headers || {}) } });
  if (r.status === 401) {
    $('token-row').hidden = false;
    throw new Error('this server needs an access token: enter it above');
  }
  if (!r.ok) {
    let msg = r.status + ' ' + r.statusText;
    try { msg = (await r.json()).error; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

// ---- gallery ---------------------------------------------------------------

async function loadGallery() {
  let list;
  try {
    list = (await (await api('/v1/styles')).json()).styles;
  } catch (e) {
    setStatus('Cannot list the styles: ' + e.message);
    return;
  }
  const g = $('gallery');
  g.replaceChildren();
  const second = $('style2');
  second.replaceChildren(new Option('None', ''));
  if (list.length === 0) g.textContent = 'No gallery on this server: upload a painting.';
  for (const s of list) {
    const label = document.createElement('label');
    label.className = 'thumb';
    const input = document.createElement('input');
    input.type = 'radio';
    input.name = 'style';
    input.value = s.id;
    input.id = 'style-' + s.id;
    const img = document.createElement('img');
    img.alt = '';
    const span = document.createElement('span');
    span.textContent = s.name;
    label.append(input, img, span);
    g.append(label);
    second.append(new Option(s.name, s.id));
    input.addEventListener('change', () => {
      state.styleId = s.id;
      state.styleFile = null;
      $('style-file').value = '';
      settled();
    });
    api(s.thumbnail).then((r) => r.blob()).then((b) => { img.src = URL.createObjectURL(b); }).catch(() => {});
  }
}

// ---- inputs ----------------------------------------------------------------

// The picture with its shorter side at most `side` (the file itself when it is
// already that small, so its pixels reach the server untouched).
async function scaled(file, side) {
  const bmp = await createImageBitmap(file);
  const s = side / Math.min(bmp.width, bmp.height);
  if (s >= 1) return { blob: file, w: bmp.width, h: bmp.height };
  const w = Math.round(bmp.width * s), h = Math.round(bmp.height * s);
  const c = document.createElement('canvas');
  c.width = w; c.height = h;
  const g = c.getContext('2d');
  g.imageSmoothingQuality = 'high';
  g.drawImage(bmp, 0, 0, w, h);
  const blob = await new Promise((ok) => c.toBlob(ok, 'image/jpeg', 0.92));
  return { blob, w, h };
}

async function setPhoto(file) {
  if (!file) return;
  state.photo = file;
  try {
    state.preview = await scaled(file, PREVIEW);
    state.full = await scaled(file, +$('size').value);
  } catch (_) {
    state.photo = null;
    setStatus('This file is not a picture the browser can read.');
    return;
  }
  settled();
}

function ready() {
  if (!state.photo) { setStatus('Pick a photo.'); return false; }
  if (!state.styleId && !state.styleFile) { setStatus('Pick a style from the gallery or upload a painting.'); return false; }
  return true;
}

function form(kind) {
  const src = kind === 'preview' ? state.preview : state.full;
  const fd = new FormData();
  fd.append('content', src.blob, 'photo');
  if (state.styleFile) fd.append('style', state.styleFile, 'painting');
  else fd.append('style_id', state.styleId);
  const second = $('style2').value;
  if (second) {
    fd.append('style_id', second);
    const b = +$('blend').value;
    fd.append('style_weights', (1 - b).toFixed(3) + ',' + b.toFixed(3));
  }
  fd.append('alpha', $('alpha').value);
  if ($('color').value) fd.append('preserve_color', $('color').value);
  fd.append('content_size', '0'); // the page sized the photo already
  fd.append('format', kind === 'preview' ? 'jpeg' : 'png');
  return fd;
}

// ---- requests --------------------------------------------------------------

async function run(kind) {
  if (kind === 'preview') state.previewTimer = 0;
  else { clearTimeout(state.fullTimer); state.fullTimer = 0; }
  if (!ready()) return;
  if (state.controller) state.controller.abort(); // a stale request
  const controller = new AbortController();
  state.controller = controller;
  state.inflight = kind;
  if (kind === 'full') state.wantFull = false;
  setStatus(kind === 'preview' ? 'Preview…' : 'Painting at full size…');
  const t0 = performance.now();
  try {
    const r = await api('/v1/stylize', { method: 'POST', body: form(kind), signal: controller.signal });
    const blob = await r.blob();
    if (controller.signal.aborted) return;
    state.inflight = null;
    state.controller = null;
    show(blob, kind, (performance.now() - t0) / 1000);
    if (kind === 'preview' && state.wantFull && !state.previewTimer) {
      clearTimeout(state.fullTimer);
      state.fullTimer = setTimeout(() => run('full'), 250);
    }
  } catch (e) {
    if (e.name === 'AbortError') return;
    state.inflight = null;
    state.controller = null;
    setStatus('Error: ' + e.message);
  }
}

function show(blob, kind, secs) {
  const img = $('result');
  const url = URL.createObjectURL(blob);
  img.onload = () => {
    const size = img.naturalWidth + '×' + img.naturalHeight;
    $('caption').textContent = (kind === 'preview' ? 'Preview, ' : '') + size + ' px';
    setStatus(kind === 'preview'
      ? 'Preview ready (' + secs.toFixed(1) + ' s); the full size follows when you stop.'
      : 'Done: ' + size + ' px in ' + secs.toFixed(1) + ' s.');
  };
  img.src = url;
  img.hidden = false;
  img.className = kind;
  img.dataset.kind = kind;
  img.dataset.alpha = $('alpha').value;
  state.counts[kind] += 1;
  document.body.dataset.previews = state.counts.preview;
  document.body.dataset.fulls = state.counts.full;
  if (kind === 'full') {
    const a = $('download');
    if (state.resultURL) URL.revokeObjectURL(state.resultURL);
    state.resultURL = url;
    a.href = url;
    a.download = 'stylized.png';
    a.setAttribute('aria-disabled', 'false');
  }
}

// A slider is moving: a preview soon (debounced), the full size once it
// stops. A newer preview aborts a stale one.
function moving() {
  state.wantFull = true;
  clearTimeout(state.previewTimer);
  clearTimeout(state.fullTimer);
  state.fullTimer = 0;
  state.previewTimer = setTimeout(() => run('preview'), 120);
  camRestart();
}

// Something settled (a slider released, a choice made): the full size soon,
// unless a preview is due or on its way (it asks for the full size when it
// lands).
function settled() {
  state.wantFull = true;
  clearTimeout(state.fullTimer);
  state.fullTimer = setTimeout(() => {
    state.fullTimer = 0;
    if (!state.previewTimer && state.inflight !== 'preview') run('full');
  }, 350);
  camRestart();
}

// ---- webcam ----------------------------------------------------------------

function camParams() {
  const p = new URLSearchParams();
  p.append('style_id', state.styleId);
  const second = $('style2').value;
  if (second) {
    p.append('style_id', second);
    const b = +$('blend').value;
    p.append('style_weights', (1 - b).toFixed(3) + ',' + b.toFixed(3));
  }
  p.append('alpha', $('alpha').value);
  if ($('color').value) p.append('preserve_color', $('color').value);
  p.append('size', String(PREVIEW));
  p.append('temporal', $('temporal').value);
  if (state.token) p.append('access_token', state.token);
  return p;
}

async function camStart() {
  if (!state.styleId) { setStatus('The webcam uses a gallery style: pick one first.'); return; }
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) {
    setStatus('No camera: ' + e.message);
    return;
  }
  const video = $('camera');
  video.srcObject = media;
  await video.play();
  state.cam = { media, ws: null, frames: 0, since: performance.now(), canvas: document.createElement('canvas') };
  $('webcam').textContent = 'Stop webcam';
  $('webcam').setAttribute('aria-pressed', 'true');
  camConnect();
}

function camConnect() {
  const cam = state.cam;
  if (!cam) return;
  if (cam.ws) { cam.ws.onclose = null; cam.ws.close(); }
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(proto + '//' + location.host + '/v1/webcam?' + camParams());
  ws.binaryType = 'blob';
  cam.ws = ws;
  ws.onopen = () => { setStatus('Webcam on.'); camSend(); };
  ws.onmessage = (ev) => {
    if (typeof ev.data === 'string') {
      const e = JSON.parse(ev.data);
      if (e.status !== 503) setStatus('Webcam: ' + e.error);
      setTimeout(camSend, e.status === 503 ? 200 : 1000);
      return;
    }
    const img = $('result');
    const old = img.dataset.cam === '1' ? img.src : null;
    img.src = URL.createObjectURL(ev.data);
    if (old) URL.revokeObjectURL(old);
    img.hidden = false;
    img.dataset.cam = '1';
    img.dataset.kind = 'webcam';
    cam.frames += 1;
    document.body.dataset.camFrames = cam.frames;
    const secs = (performance.now() - cam.since) / 1000;
    if (secs >= 1) {
      $('fps').textContent = (cam.frames / secs).toFixed(1) + ' frames/s';
    }
    camSend();
  };
  ws.onclose = () => { if (state.cam === cam) setStatus('Webcam connection closed.'); };
}

function camSend() {
  const cam = state.cam;
  if (!cam || !cam.ws || cam.ws.readyState !== WebSocket.OPEN) return;
  const v = $('camera');
  if (!v.videoWidth) { setTimeout(camSend, 100); return; }
  const s = PREVIEW / Math.min(v.videoWidth, v.videoHeight);
  const c = cam.canvas;
  c.width = Math.round(v.videoWidth * Math.min(1, s));
  c.height = Math.round(v.videoHeight * Math.min(1, s));
  c.getContext('2d').drawImage(v, 0, 0, c.width, c.height);
  c.toBlob((b) => { if (cam.ws.readyState === WebSocket.OPEN) cam.ws.send(b); }, 'image/jpeg', 0.85);
}

function camStop() {
  const cam = state.cam;
  if (!cam) return;
  state.cam = null;
  if (cam.ws) { cam.ws.onclose = null; cam.ws.close(); }
  cam.media.getTracks().forEach((t) => t.stop());
  $('webcam').textContent = 'Start webcam';
  $('webcam').setAttribute('aria-pressed', 'false');
  $('fps').textContent = '';
  setStatus('Webcam off.');
}

let camTimer = 0;
function camRestart() {
  if (!state.cam) return;
  clearTimeout(camTimer);
  camTimer = setTimeout(() => {
    if (!state.cam) return;
    state.cam.frames = 0;
    state.cam.since = performance.now();
    camConnect();
  }, 300);
}

// ---- wiring ----------------------------------------------------------------

function wire() {
  $('controls').addEventListener('submit', (e) => e.preventDefault());
  $('photo').addEventListener('change', (e) => setPhoto(e.target.files[0]));
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer.files.length) setPhoto(e.dataTransfer.files[0]);
  });
  $('style-file').addEventListener('change', (e) => {
    const f = e.target.files[0];
    if (!f) return;
    state.styleFile = f;
    state.styleId = null;
    document.querySelectorAll('input[name=style]').forEach((r) => { r.checked = false; });
    settled();
  });
  for (const [id, out] of [['alpha', 'alpha-out'], ['blend', 'blend-out']]) {
    $(id).addEventListener('input', () => { $(out).textContent = (+$(id).value).toFixed(2); moving(); });
    $(id).addEventListener('change', settled);
  }
  $('style2').addEventListener('change', () => { $('blend').disabled = !$('style2').value; settled(); });
  $('color').addEventListener('change', settled);
  $('size').addEventListener('change', async () => {
    if (state.photo) state.full = await scaled(state.photo, +$('size').value);
    settled();
  });
  $('token').addEventListener('change', () => { state.token = $('token').value.trim(); loadGallery(); });
  $('webcam').addEventListener('click', () => (state.cam ? camStop() : camStart()));
  $('download').addEventListener('click', (e) => {
    if ($('download').getAttribute('aria-disabled') === 'true') e.preventDefault();
  });
  loadGallery();
}

wire();
