// The case page's image area (radflow_review.views): the series in three planes, the SEG
// overlaid in each, crosshairs linked, and the editor (brush, eraser, undo/redo, save).
//
// The SEG is held once as a label volume L (uint8, z-major, D*H*W): every view and edit works on
// it. Planes: axial (column x, row y), coronal (column x, row z from the top slice down),
// sagittal (column y, row z from the top slice down), as the server renders them.
(() => {
  'use strict';
  const root = document.getElementById('imaging');
  if (!root) return;
  const reviewId = +root.dataset.review, D = +root.dataset.slices, H = +root.dataset.rows,
    W = +root.dataset.columns, seg = root.dataset.seg || null, editable = root.dataset.editable === '1';
  const csrfInput = document.querySelector('input[name=csrf]');
  const $ = (id) => document.getElementById(id);
  const COLOUR = {axial: '#ff7a6b', coronal: '#7bd88f', sagittal: '#ffd866'};
  const pos = {z: +root.dataset.start, y: H >> 1, x: W >> 1};  // the crosshair, in voxels
  let spacing = [1, 1, 1], preset = 'soft tissue', L = null, active = null, hover = null;
  let stroke = null, dragging = null, dirtySlices = 0, leaving = false, saving = false;
  const counts = new Float64Array(256), shown = {}, opacity = {}, colours = {};
  const done = [], undone = [];  // strokes: {axis, at, idx, before, after}
  const original = new Map(), diff = new Int32Array(D);  // voxel -> loaded value; per slice: voxels changed
  const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));

  // -- the panes ---------------------------------------------------------------------------
  const panes = {};
  for (const fig of root.querySelectorAll('.pane')) {
    const ct = fig.querySelector('canvas.ct');
    panes[fig.dataset.axis] = {axis: fig.dataset.axis, fig, ct, g: ct.getContext('2d', {willReadFrequently: true}),
      overlay: fig.querySelector('canvas.overlay'), frame: fig.querySelector('.frame'),
      slider: fig.querySelector('input[type=range]'), label: fig.querySelector('figcaption .muted span'),
      images: new Map()};
  }
  const all = () => Object.values(panes);
  function geometry() {
    const [sz, sy, sx] = spacing;
    Object.assign(panes.axial, {cols: W, rows: H, su: sx, sv: sy, key: 'z', size: D,
      voxel: (c, r) => (pos.z * H + r) * W + c});
    Object.assign(panes.coronal, {cols: W, rows: D, su: sx, sv: sz, key: 'y', size: H,
      voxel: (c, r) => ((D - 1 - r) * H + pos.y) * W + c});
    Object.assign(panes.sagittal, {cols: H, rows: D, su: sy, sv: sz, key: 'x', size: W,
      voxel: (c, r) => ((D - 1 - r) * H + c) * W + pos.x});
    for (const p of all()) { p.ct.width = p.cols; p.ct.height = p.rows; }
  }
  function cross(p) {  // [column of the vertical line, its colour], [row of the horizontal one, its colour]
    if (p.axis === 'axial') return [[pos.x, COLOUR.sagittal], [pos.y, COLOUR.coronal]];
    if (p.axis === 'coronal') return [[pos.x, COLOUR.sagittal], [D - 1 - pos.z, COLOUR.axial]];
    return [[pos.y, COLOUR.coronal], [D - 1 - pos.z, COLOUR.axial]];
  }
  function layout() {  // each pane as large as its column allows, in true proportions (mm)
    const tallest = Math.max(260, window.innerHeight * 0.62);
    for (const p of all()) {
      const wide = p.cols * p.su, high = p.rows * p.sv;
      const scale = Math.min(p.fig.clientWidth / wide, tallest / high);
      p.frame.style.width = `${Math.floor(wide * scale)}px`;
      p.frame.style.height = `${Math.floor(high * scale)}px`;
    }
  }

  // -- drawing ------------------------------------------------------------------------------
  function image(p) {
    const k = pos[p.key], key = `${preset}:${k}`;
    if (!p.images.has(key)) {
      p.images.set(key, new Promise((ok, bad) => {
        const i = new Image(); i.onload = () => ok(i); i.onerror = bad;
        i.src = `/reviews/${reviewId}/slices/${p.axis}/${k}.png?preset=${encodeURIComponent(preset)}`;
      }));
      if (p.images.size > 96) p.images.delete(p.images.keys().next().value);
    }
    return p.images.get(key);
  }
  async function render(p) {
    if (!p.cols) return;
    const want = `${preset}:${pos[p.key]}`, img = await image(p);
    if (want !== `${preset}:${pos[p.key]}`) return;  // moved on meanwhile
    p.g.drawImage(img, 0, 0);
    if (L) {
      const frame = p.g.getImageData(0, 0, p.cols, p.rows), d = frame.data;
      for (let r = 0, i = 0; r < p.rows; r++) for (let c = 0; c < p.cols; c++, i += 4) {
        const n = L[p.voxel(c, r)];
        if (!n || !shown[n]) continue;
        const k = colours[n] || [255, 255, 0], a = opacity[n];
        d[i] = d[i] * (1 - a) + k[0] * a; d[i + 1] = d[i + 1] * (1 - a) + k[1] * a; d[i + 2] = d[i + 2] * (1 - a) + k[2] * a;
      }
      p.g.putImageData(frame, 0, 0);
    }
    overlay(p);
  }
  function overlay(p) {  // crosshair and brush outline, at screen resolution
    const w = p.frame.clientWidth, h = p.frame.clientHeight, dpr = window.devicePixelRatio || 1;
    if (p.overlay.width !== Math.round(w * dpr)) p.overlay.width = Math.round(w * dpr);
    if (p.overlay.height !== Math.round(h * dpr)) p.overlay.height = Math.round(h * dpr);
    const o = p.overlay.getContext('2d'), sx = w / p.cols, sy = h / p.rows;
    o.setTransform(dpr, 0, 0, dpr, 0, 0); o.clearRect(0, 0, w, h);
    const [[col, colColour], [row, rowColour]] = cross(p);
    o.globalAlpha = 0.65; o.lineWidth = 1;
    o.strokeStyle = colColour; o.beginPath(); o.moveTo((col + 0.5) * sx, 0); o.lineTo((col + 0.5) * sx, h); o.stroke();
    o.strokeStyle = rowColour; o.beginPath(); o.moveTo(0, (row + 0.5) * sy); o.lineTo(w, (row + 0.5) * sy); o.stroke();
    o.globalAlpha = 1;
    if (hover && hover.axis === p.axis && painting()) {
      const mine = active === p.axis;  // a dashed outline: the next click only makes the view active
      o.strokeStyle = mine ? '#ffffff' : '#9aa4b5'; o.lineWidth = mine ? 1.5 : 1; o.setLineDash(mine ? [] : [4, 4]);
      o.beginPath(); o.arc(hover.u * sx, hover.v * sy, size() * w / (p.cols * p.su), 0, 2 * Math.PI); o.stroke();
      o.setLineDash([]);
    }
  }
  const queued = new Set();
  function redraw(...axes) {
    if (!queued.size) requestAnimationFrame(() => { const ps = [...queued]; queued.clear(); ps.forEach(render); });
    for (const a of axes.length ? axes : Object.keys(panes)) queued.add(panes[a]);
  }
  function sync() {
    for (const p of all()) { p.slider.value = pos[p.key]; p.label.textContent = pos[p.key] + 1; }
  }
  function go(p, k) {
    if (!p.cols) return;
    pos[p.key] = clamp(k, 0, p.size - 1); sync(); redraw();
  }
  function move(p, {u, v}) {  // the crosshair to a point of pane p
    const c = clamp(Math.floor(u), 0, p.cols - 1), r = clamp(Math.floor(v), 0, p.rows - 1);
    if (p.axis === 'axial') { pos.x = c; pos.y = r; }
    else if (p.axis === 'coronal') { pos.x = c; pos.z = D - 1 - r; }
    else { pos.y = c; pos.z = D - 1 - r; }
    sync(); redraw();
  }

  // -- the editor ---------------------------------------------------------------------------
  const tool = () => (document.querySelector('input[name=tool]:checked') || {value: 'view'}).value;
  const painting = () => editable && L !== null && tool() !== 'view';
  const size = () => +(($('size') || {}).value || 8);  // brush radius, mm
  const segment = () => +$('segment').value;
  function activate(axis) {
    active = axis;
    for (const p of all()) {
      p.fig.classList.toggle('active', p.axis === axis);
      p.ct.classList.toggle('paint', painting()); p.ct.classList.toggle('inactive', p.axis !== axis);
    }
  }
  function put(i, now) {  // one voxel, keeping counts and which slices differ from the loaded SEG
    const was = L[i];
    if (was === now) return;
    const z = Math.floor(i / (H * W));
    let first = original.get(i);
    if (first === undefined) { first = was; original.set(i, was); }
    const before = was !== first, after = now !== first;
    if (before !== after) {
      const old = diff[z]; diff[z] += after ? 1 : -1;
      if (!old && diff[z]) dirtySlices++; else if (old && !diff[z]) dirtySlices--;
    }
    L[i] = now; counts[was]--; counts[now]++;
  }
  function dab(p, u, v) {  // the brush or eraser on the voxels within the radius (mm) of (u, v)
    const n = segment(), R = size(), erase = tool() === 'eraser', over = $('overwrite').checked;
    const ru = R / p.su, rv = R / p.sv, cu = Math.floor(u), cv = Math.floor(v);
    for (let r = Math.max(0, Math.floor(v - rv)); r <= Math.min(p.rows - 1, Math.floor(v + rv)); r++)
      for (let c = Math.max(0, Math.floor(u - ru)); c <= Math.min(p.cols - 1, Math.floor(u + ru)); c++) {
        const du = (c + 0.5 - u) * p.su, dv = (r + 0.5 - v) * p.sv;
        if (du * du + dv * dv > R * R && !(c === cu && r === cv)) continue;
        const i = p.voxel(c, r), was = L[i];
        // 3D Slicer's masking: without "overwrite others" only empty voxels and the segment's own
        const now = erase ? (was === n ? 0 : was) : (over || was === 0 ? n : was);
        if (now !== was) { if (!stroke.before.has(i)) stroke.before.set(i, was); put(i, now); }
      }
  }
  function line(p, a, b) {  // dabs close enough for a continuous stroke
    const mm = Math.hypot((b.u - a.u) * p.su, (b.v - a.v) * p.sv);
    const steps = Math.max(1, Math.ceil(mm / Math.max(Math.min(p.su, p.sv) / 2, size() / 3)));
    for (let s = 1; s <= steps; s++) dab(p, a.u + (b.u - a.u) * s / steps, a.v + (b.v - a.v) * s / steps);
  }
  function finish() {
    const s = stroke; stroke = null;
    if (!s || !s.before.size) return;
    const idx = Int32Array.from(s.before.keys()), before = Uint8Array.from(s.before.values());
    const after = idx.map((i) => L[i]);
    done.push({axis: s.axis, at: s.at, idx, before, after: Uint8Array.from(after)});
    undone.length = 0; changed();
  }
  function replay(s, values) {  // undo or redo a stroke, and show its slice
    for (let k = 0; k < s.idx.length; k++) put(s.idx[k], values[k]);
    pos[panes[s.axis].key] = s.at; sync(); changed();
  }
  function undo() { const s = !stroke && !saving && done.pop(); if (s) { replay(s, s.before); undone.push(s); } }
  function redo() { const s = !stroke && !saving && undone.pop(); if (s) { replay(s, s.after); done.push(s); } }
  const format = (v) => v.toLocaleString('en', {minimumFractionDigits: v < 10 ? 2 : 1,
    maximumFractionDigits: v < 10 ? 2 : 1});  // mL: a few voxels show
  function changed() {
    const voxelMl = spacing[0] * spacing[1] * spacing[2] / 1000;
    if (L) {
      for (const td of document.querySelectorAll('#segments .voxels')) td.textContent = counts[+td.dataset.n];
      for (const td of document.querySelectorAll('#segments .volume')) td.textContent = format(counts[+td.dataset.n] * voxelMl);
    }
    redraw();
    if (!editable) return;
    $('undo').disabled = !done.length || saving; $('redo').disabled = !undone.length || saving;
    $('save').disabled = !dirtySlices || saving;
    if (!saving) $('editstate').textContent = dirtySlices ? `${dirtySlices} slice(s) edited, not saved` : 'no edits';
    $('editstate').classList.toggle('dirty', dirtySlices > 0);
  }
  const unsaved = () => dirtySlices > 0 && !leaving;

  // -- events -------------------------------------------------------------------------------
  function at(p, e) {
    const r = p.ct.getBoundingClientRect();
    return {u: (e.clientX - r.left) / r.width * p.cols, v: (e.clientY - r.top) / r.height * p.rows};
  }
  for (const p of all()) {
    p.ct.addEventListener('pointerdown', (e) => {
      if (e.button !== 0 || !p.cols) return;
      const wasActive = active === p.axis, pt = at(p, e);
      activate(p.axis);
      p.ct.setPointerCapture(e.pointerId);
      if (!painting()) { dragging = p; move(p, pt); return; }
      if (!wasActive) { overlay(p); return; }  // the click that makes a view active never paints
      stroke = {axis: p.axis, at: pos[p.key], before: new Map(), last: pt, pane: p};
      dab(p, pt.u, pt.v); changed();
    });
    p.ct.addEventListener('pointermove', (e) => {
      if (!p.cols) return;
      const pt = at(p, e); hover = {axis: p.axis, ...pt};
      if (stroke && stroke.pane === p) { line(p, stroke.last, pt); stroke.last = pt; changed(); }
      else if (dragging === p) move(p, pt);
      else overlay(p);
    });
    p.ct.addEventListener('pointerleave', () => { if (hover && hover.axis === p.axis) { hover = null; overlay(p); } });
    p.ct.addEventListener('focus', () => { if (active !== p.axis && !stroke) activate(p.axis); });
    p.ct.addEventListener('wheel', (e) => { e.preventDefault(); go(p, pos[p.key] + (e.deltaY > 0 ? 1 : -1)); },
      {passive: false});
    p.slider.addEventListener('input', () => go(p, +p.slider.value));
  }
  for (const type of ['pointerup', 'pointercancel']) window.addEventListener(type, () => { dragging = null; if (stroke) finish(); });
  window.addEventListener('resize', () => { if (panes.axial.cols) { layout(); redraw(); } });
  document.querySelectorAll('.toggle').forEach((t) => { shown[t.dataset.n] = t.checked;
    t.addEventListener('change', () => { shown[t.dataset.n] = t.checked; redraw(); }); });
  document.querySelectorAll('.opacity').forEach((o) => { opacity[o.dataset.n] = o.value / 100;
    o.addEventListener('input', () => { opacity[o.dataset.n] = o.value / 100; redraw(); }); });
  for (const tr of document.querySelectorAll('#segments tbody tr')) {
    const swatch = tr.querySelector('[data-colour]'), toggle = tr.querySelector('.toggle');
    if (swatch && toggle) colours[toggle.dataset.n] = swatch.dataset.colour.split(',').map(Number);
  }
  const presets = [...document.querySelectorAll('.presets button')];
  const choose = (name) => { preset = name; presets.forEach((b) => b.classList.toggle('on', b.dataset.preset === name)); redraw(); };
  presets.forEach((b) => b.addEventListener('click', () => choose(b.dataset.preset)));
  document.querySelectorAll('input[name=tool]').forEach((r) => r.addEventListener('change', () => activate(active)));
  if ($('size')) $('size').addEventListener('input', () => { $('sizelabel').textContent = $('size').value; });
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName) && !['range', 'radio', 'checkbox'].includes(t.type)) return;
    const key = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && (key === 'z' || key === 'y')) {
      if (!editable) return;
      e.preventDefault(); if (key === 'y' || e.shiftKey) redo(); else undo(); return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const pane = t.closest && t.closest('.pane') ? panes[t.closest('.pane').dataset.axis] : panes[active || 'axial'];
    const step = {arrowup: 1, pageup: 1, arrowdown: -1, pagedown: -1}[key];
    if (step) { go(pane, pos[pane.key] + step); e.preventDefault(); }
    else if (/^[1-9]$/.test(key) && presets[+key - 1]) choose(presets[+key - 1].dataset.preset);
    else if (editable && 'bev'.includes(key) && key.length === 1) {
      const r = document.querySelector(`input[name=tool][value=${{b: 'brush', e: 'eraser', v: 'view'}[key]}]`);
      if (r) { r.checked = true; activate(active); if (active) overlay(panes[active]); }
    }
  });
  if (editable) {
    $('undo').addEventListener('click', undo);
    $('redo').addEventListener('click', redo);
    $('save').addEventListener('click', save);
  }

  // -- saving, and not losing edits ---------------------------------------------------------
  function slicePng(z) {  // an axial slice of L as a PNG whose red channel is the segment number
    const c = document.createElement('canvas'); c.width = W; c.height = H;
    const cg = c.getContext('2d'), frame = cg.createImageData(W, H), d = frame.data, o = z * H * W;
    for (let i = 0; i < H * W; i++) { d[4 * i] = d[4 * i + 1] = d[4 * i + 2] = L[o + i]; d[4 * i + 3] = 255; }
    cg.putImageData(frame, 0, 0);
    return c.toDataURL('image/png');
  }
  async function save() {
    saving = true; changed(); $('editstate').textContent = 'saving…';
    const body = {corrects: seg, slices: {}};
    for (let z = 0; z < D; z++) if (diff[z]) body.slices[z] = slicePng(z);
    let answer = null, out = {};
    try {
      answer = await fetch(`/api/reviews/${reviewId}/revisions`, {method: 'POST',
        headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrfInput ? csrfInput.value : ''},
        body: JSON.stringify(body)});
      out = await answer.json();
    } catch (err) { out = {error: String(err)}; }
    saving = false;
    if (!answer || !answer.ok || !out.seg_uid) {
      changed(); $('editstate').textContent = `not saved: ${out.error || out.message || (answer && answer.status)}`;
      return;
    }
    leaving = true;
    window.location = `/reviews/${reviewId}?seg=${encodeURIComponent(out.seg_uid)}&z=${pos.z}`;
  }
  window.addEventListener('beforeunload', (e) => { if (unsaved()) { e.preventDefault(); e.returnValue = ''; } });
  document.querySelectorAll('a[data-seg]').forEach((a) => a.addEventListener('click', (e) => {
    if (!unsaved()) return;
    if (confirm('Your edits are not saved. Open another SEG and lose them?')) leaving = true;
    else e.preventDefault();
  }));
  const form = $('decision');
  if (form) {
    const pick = $('corrected'), why = $('corrected-error');
    const clear = () => { why.textContent = ''; pick.removeAttribute('aria-invalid'); };
    if (why.textContent.trim()) pick.setAttribute('aria-invalid', 'true');
    pick.addEventListener('change', clear);
    form.querySelectorAll('input[name=decision]').forEach((r) => r.addEventListener('change', clear));
    form.addEventListener('submit', (e) => {
      const decision = (form.querySelector('input[name=decision]:checked') || {}).value;
      if (decision === 'corrected' && !pick.value) {
        e.preventDefault();
        why.textContent = unsaved() ? 'Save your edits as a new SEG revision first: it is then picked here.'
          : 'Pick the corrected SEG: a revision saved in the editor, or a SEG from a workstation.';
        pick.setAttribute('aria-invalid', 'true'); pick.focus();
        return;
      }
      if (unsaved() && !confirm('Your edits are not saved and will be lost. Submit the decision anyway?')) {
        e.preventDefault(); return;
      }
      leaving = true;
    });
  }

  // -- start --------------------------------------------------------------------------------
  function problem(message) {
    const p = document.createElement('p'); p.className = 'field-error'; p.id = 'imaging-error';
    p.textContent = message; root.prepend(p); root.dataset.ready = 'error';
  }
  async function start() {
    const geo = await fetch(`/reviews/${reviewId}/geometry.json`);
    if (!geo.ok) { problem(`The series cannot be shown (${geo.status}).`); return; }
    spacing = (await geo.json()).spacing;
    geometry(); layout(); choose(preset);
    if (seg) {
      const answer = await fetch(`/reviews/${reviewId}/labels/${encodeURIComponent(seg)}.bin`);
      const data = answer.ok ? new Uint8Array(await answer.arrayBuffer()) : null;
      if (!data || data.length !== D * H * W) {
        problem(`The segmentation cannot be shown (${answer.ok ? 'its size does not fit the series' : answer.status}).`);
      } else {
        L = data;
        for (let i = 0; i < L.length; i++) counts[L[i]]++;
        let n = 0, sx = 0, sy = 0;  // the crosshair on the segments of the first slice shown
        for (let y = 0, o = pos.z * H * W; y < H; y++) for (let x = 0; x < W; x++) if (L[o + y * W + x]) { n++; sx += x; sy += y; }
        if (n) { pos.x = Math.round(sx / n); pos.y = Math.round(sy / n); }
      }
    }
    sync(); activate(null); changed();
    await Promise.all(all().map(render));
    root.dataset.ready = root.dataset.ready === 'error' ? 'error' : '1';
  }
  start().catch((err) => problem(`The images cannot be shown: ${err}`));
})();
