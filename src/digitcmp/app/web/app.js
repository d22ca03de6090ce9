// The comparison page: two pads (strokes, or an image file each), answered by POST /api/compare
// a short while after the last change. Plain script, no libraries, nothing fetched from elsewhere.
"use strict";

const DEBOUNCE_MS = 250;   // while a stroke is drawn, ask the server this long after the last move
const STROKE_END_MS = 40;  // and this soon after a stroke ends (a second stroke that starts meanwhile waits)
const INK = "#000";
const PAPER = "#fff";
const UPLOAD_SIDE = 112;   // a drawing is sent at this size: 4x the 28x28 field the digit is fitted into, and
                           // about 6x less work for the server than the 280-pixel pad
const DIGIT_SHARE = 0.7;   // a drawing is sent with its digit this share of the upload's side, whatever its size on the pad
const MAX_ENLARGE = 8;     // but a mark is enlarged at most this much (a dot stays a dot)
const SEND_SIDE = 2000;    // a photo is shrunk here to at most this many pixels a side before it is sent
const SEND_BYTES = 2 * 2 ** 20;   // and a file over this size is re-encoded: two files go in one request,
const MAX_BODY = 5 * 2 ** 20 - 2 ** 14;   // whose body the server takes up to 5 MB (less the form's own bytes)

const sides = {};
let requestSeq = 0;        // answers that arrive after a newer request was sent are dropped
let timer = null;

function $(id) { return document.getElementById(id); }

function buildSide(name) {
  // The side's elements from the templates, with ids that name the side (pad-a, undo-b, ...).
  const root = document.querySelector(`.side[data-side="${name}"]`);
  root.appendChild(document.getElementById("side-template").content.cloneNode(true));
  const seen = document.querySelector(`.seen[data-side="${name}"]`);
  seen.appendChild(document.getElementById("seen-template").content.cloneNode(true));
  const title = root.dataset.title;
  root.querySelector("h2").textContent = title;
  const parts = { pad: ".pad", undo: '[data-part="undo"]', clear: '[data-part="clear"]',
                  file: '[data-part="file"]', photo: '[data-part="photo"]' };
  for (const [part, selector] of Object.entries(parts)) root.querySelector(selector).id = `${part}-${name}`;
  for (const part of ["thumb", "crop", "view", "bars"]) seen.querySelector("." + part).id = `${part}-${name}`;
  const lower = title.toLowerCase();
  $("pad-" + name).setAttribute("aria-label", `drawing pad: ${lower} (Delete clears it, Ctrl+Z undoes, Ctrl+V pastes an image)`);
  $("undo-" + name).setAttribute("aria-label", `Undo the last stroke of the ${lower}`);
  $("clear-" + name).setAttribute("aria-label", `Clear the ${lower}`);
  $("file-" + name).setAttribute("aria-label", `Choose an image file for the ${lower}`);
  $("photo-" + name).setAttribute("aria-label", `Take a photo for the ${lower}`);
  $("bars-" + name).setAttribute("aria-label", "posterior of each class: " + lower);
}

function makeSide(name) {
  buildSide(name);
  const canvas = $("pad-" + name);
  const side = { name, canvas, ctx: canvas.getContext("2d"), strokes: [], file: null, image: null, drawing: null,
                 history: [] };   // what each change replaced, for Undo (a Clear, a file and a stroke alike)
  redraw(side);

  canvas.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    remember(side);
    if (side.file) { side.file = null; side.image = null; }   // drawing replaces a dropped image
    // A new stroke: no question about the half-drawn digit, and no answer to it shown (one in flight is dropped).
    clearTimeout(timer);
    requestSeq++;
    showDrawing();
    side.drawing = [point(side, e)];
    side.strokes.push(side.drawing);
    redraw(side);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!side.drawing) return;
    e.preventDefault();
    side.drawing.push(point(side, e));
    redraw(side);
  });
  const end = () => { if (side.drawing) { side.drawing = null; schedule(STROKE_END_MS); } };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);

  $("undo-" + name).addEventListener("click", () => {
    // Back to what the last change replaced: a stroke, a file, or everything a Clear removed.
    const last = side.history.pop();
    if (!last) return;
    Object.assign(side, last);
    redraw(side); schedule(0);
  });
  $("clear-" + name).addEventListener("click", () => {
    if (!hasInput(side)) return;
    remember(side);
    side.strokes = []; side.file = null; side.image = null;
    redraw(side); schedule(0);
  });
  for (const part of ["file-", "photo-"]) {
    $(part + name).addEventListener("change", (e) => {
      if (e.target.files.length) useFile(side, e.target.files[0]);
      e.target.value = "";
    });
  }
  canvas.addEventListener("keydown", (e) => {   // the pad's keys, for keyboards
    if (e.key === "Delete" || e.key === "Backspace") { e.preventDefault(); $("clear-" + name).click(); }
    else if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); $("undo-" + name).click(); }
  });
  canvas.addEventListener("paste", (e) => {
    const files = e.clipboardData && e.clipboardData.files;
    if (files && files.length) { e.preventDefault(); useFile(side, files[0]); }
  });
  canvas.addEventListener("dragover", (e) => { e.preventDefault(); canvas.classList.add("dragover"); });
  canvas.addEventListener("dragleave", () => canvas.classList.remove("dragover"));
  canvas.addEventListener("drop", (e) => {
    e.preventDefault();
    canvas.classList.remove("dragover");
    const files = e.dataTransfer && e.dataTransfer.files;
    if (files && files.length) useFile(side, files[0]);
  });
  return side;
}

function remember(side) {
  side.history.push({ strokes: side.strokes.slice(), file: side.file, image: side.image });
}

function point(side, e) {
  const box = side.canvas.getBoundingClientRect();
  return [(e.clientX - box.left) * side.canvas.width / box.width, (e.clientY - box.top) * side.canvas.height / box.height];
}

function redraw(side) {
  const { ctx, canvas } = side;
  ctx.fillStyle = PAPER;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (side.image) {  // the dropped image, fitted into the pad
    const s = Math.min(canvas.width / side.image.width, canvas.height / side.image.height);
    const w = side.image.width * s, h = side.image.height * s;
    ctx.drawImage(side.image, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    return;
  }
  drawStrokes(ctx, side.strokes, canvas.width / 14);   // about MNIST's stroke width relative to the digit
}

function drawStrokes(ctx, strokes, width) {
  // Each stroke a round-capped line of the pen's width (a tap: a dot), in ink.
  ctx.strokeStyle = INK;
  ctx.fillStyle = INK;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.lineWidth = width;
  for (const stroke of strokes) {
    ctx.beginPath();
    if (stroke.length === 1) { ctx.arc(stroke[0][0], stroke[0][1], width / 2, 0, 2 * Math.PI); ctx.fill(); continue; }
    ctx.moveTo(stroke[0][0], stroke[0][1]);
    for (const [x, y] of stroke.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }
}

async function sendable(file) {
  // A phone photo (12-200 MP, 3-20 MB) is decoded by the browser's own decoder (its orientation
  // tag applied) and shrunk to at most SEND_SIDE pixels a side before it is sent, so that any photo
  // is answered within the server's bounds. A file the browser cannot decode (HEIC in most desktop
  // browsers) goes as it is: the server reads HEIC, and says what it cannot read.
  let bitmap;
  try { bitmap = await createImageBitmap(file, { imageOrientation: "from-image" }); } catch (err) { return file; }
  const scale = Math.min(1, SEND_SIDE / Math.max(bitmap.width, bitmap.height));
  if (scale === 1 && file.size <= SEND_BYTES) { bitmap.close(); return file; }
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  // A photo as JPEG; an image that may hold transparency (PNG, GIF, WebP) keeps it, as PNG.
  const type = /png|gif|webp/.test(file.type) ? "image/png" : "image/jpeg";
  const blob = await new Promise((done) => canvas.toBlob(done, type, 0.92));
  if (!blob) return file;
  const stem = (file.name || "image").replace(/\.[^.]*$/, "");
  return new File([blob], stem + (type === "image/png" ? ".png" : ".jpg"), { type });
}

function useFile(side, file) {
  remember(side);
  side.strokes = [];
  side.file = file;
  side.image = null;
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => { side.image = img; redraw(side); URL.revokeObjectURL(url); };
  img.onerror = () => { redraw(side); URL.revokeObjectURL(url); };   // the server says what is wrong with it
  img.src = url;
  redraw(side);
  requestSeq++;
  showBusy();
  sendable(file).then((ready) => {
    if (side.file !== file) return;   // replaced meanwhile
    side.file = ready;
    schedule(0);
  });
}

function hasInput(side) { return side.file !== null || side.strokes.length > 0; }

function schedule(delay = DEBOUNCE_MS) {
  clearTimeout(timer);
  timer = setTimeout(ask, delay);
}

function drawForUpload(side, ctx) {
  // The strokes drawn again with the digit at a usual size (DIGIT_SHARE of the side, centered) and
  // the pen of a full-sized digit: a digit drawn in a corner of the pad, or a fifth of its size, is
  // read like a large one instead of as a blob of a fat pen.
  const points = side.strokes.flat();
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const extent = Math.max(x1 - x0, y1 - y0);
  const fit = UPLOAD_SIDE / side.canvas.width;   // the pad at the upload's size
  const scale = Math.min(extent > 0 ? (DIGIT_SHARE * UPLOAD_SIDE) / extent : fit, MAX_ENLARGE * fit);
  ctx.fillStyle = PAPER;
  ctx.fillRect(0, 0, UPLOAD_SIDE, UPLOAD_SIDE);
  ctx.save();
  ctx.translate(UPLOAD_SIDE / 2, UPLOAD_SIDE / 2);
  ctx.scale(scale, scale);
  ctx.translate(-(x0 + x1) / 2, -(y0 + y1) / 2);
  drawStrokes(ctx, side.strokes, UPLOAD_SIDE / 14 / scale);   // the pad's pen for a digit that fills DIGIT_SHARE of it
  ctx.restore();
}

function padBlob(side) {
  // A drawing is sent as raw gray pixels (a binary PGM): building it takes well under a millisecond,
  // where PNG encoding (canvas.toBlob) took about a second in a headless browser.
  if (side.file) return side.file;
  const small = document.createElement("canvas");
  small.width = small.height = UPLOAD_SIDE;
  const ctx = small.getContext("2d");
  drawForUpload(side, ctx);
  const rgba = ctx.getImageData(0, 0, UPLOAD_SIDE, UPLOAD_SIDE).data;
  const header = new TextEncoder().encode(`P5\n${UPLOAD_SIDE} ${UPLOAD_SIDE}\n255\n`);
  const bytes = new Uint8Array(header.length + UPLOAD_SIDE * UPLOAD_SIDE);
  bytes.set(header);
  for (let i = 0, j = header.length; i < rgba.length; i += 4, j++) bytes[j] = rgba[i];   // ink is black on white: red is gray
  return new Blob([bytes], { type: "image/x-portable-graymap" });
}

function inPageWords(message) {
  // The API names the images by their form fields a and b; the page calls them the first and second digit.
  return message
    .replace(/\bimage a\b/g, "the first digit's image").replace(/\bimage b\b/g, "the second digit's image")
    .replace(/\bfield a\b/g, "the first digit").replace(/\bfield b\b/g, "the second digit")
    .replace(/(^|; )a: /g, "$1first digit: ").replace(/(^|; )b: /g, "$1second digit: ");
}

// A server started with --token: its address carries the token (/#token=...); kept for this tab
// only, taken out of the address bar, and sent with every API call and the report link.
const token = (() => {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (m) { sessionStorage.setItem("digitcmp-token", decodeURIComponent(m[1])); history.replaceState(null, "", location.pathname); }
  return sessionStorage.getItem("digitcmp-token");
})();
const authHeaders = token ? { Authorization: "Bearer " + token } : {};

async function ask() {
  const a = sides.a, b = sides.b;
  if (!hasInput(a) || !hasInput(b)) { showIdle(); return; }
  const seq = ++requestSeq;
  showBusy();
  const form = new FormData();
  const blobs = [padBlob(a), padBlob(b)];
  if (blobs[0].size + blobs[1].size > MAX_BODY) {   // only files this browser could not decode to shrink them
    const mb = ((blobs[0].size + blobs[1].size) / 2 ** 20).toFixed(1);
    showError(`The two images are ${mb} MB together and this browser cannot shrink them (HEIC, say); the server ` +
              "takes at most 5 MB. Choose JPEG or PNG files, or smaller photos.");
    return;
  }
  form.append("a", blobs[0], a.file ? a.file.name || "a" : "a.pgm");
  form.append("b", blobs[1], b.file ? b.file.name || "b" : "b.pgm");
  let response, body;
  try {
    response = await fetch("/api/compare", { method: "POST", body: form, headers: authHeaders });
  } catch (err) {
    if (seq === requestSeq) showError("The server is unreachable: is `digitcmp serve` still running?");
    return;
  }
  try { body = await response.json(); } catch (err) { body = null; }
  if (seq !== requestSeq) return;
  if (!response.ok) {
    const why = body && body.error ? body.error : "HTTP " + response.status;
    showError("Input rejected: " + inPageWords(why));
    return;
  }
  showAnswer(body);
}

function clearSeen(name) { drawView(name, null); drawBars(name, null); drawThumb(name, null); }

function showIdle() {
  requestSeq++;
  $("answer").textContent = "Draw two digits.";
  $("answer").className = "answer";
  $("detail").textContent = "";
  $("unsure").hidden = true;
  $("status").hidden = true;
  document.querySelector(".result").classList.remove("busy");
  for (const name of ["a", "b"]) if (!hasInput(sides[name])) clearSeen(name);
}

function showPending(text) {
  // In place of the answer that no longer matches the pads: "Drawing..." while a stroke is drawn
  // (no verdict for a half-drawn digit), "Reading..." at once while the answer is on its way.
  document.querySelector(".result").classList.add("busy");
  $("answer").textContent = text;
  $("answer").className = "answer";
  $("detail").textContent = "";
  $("unsure").hidden = true;
}

function showDrawing() { showPending("Drawing\u2026"); }

function showBusy() { showPending("Reading\u2026"); }

function showError(message) {
  // An error replaces everything the last answer showed: nothing stale stays next to it.
  document.querySelector(".result").classList.remove("busy");
  $("answer").textContent = "No answer.";
  $("answer").className = "answer";
  $("detail").textContent = "";
  $("unsure").hidden = true;
  for (const name of ["a", "b"]) clearSeen(name);
  $("status").textContent = message;
  $("status").hidden = false;
}

function showAnswer(r) {
  document.querySelector(".result").classList.remove("busy");
  $("status").hidden = true;
  // When a side is in doubt the headline says so first; the verdict it leans to comes below, quieter.
  const answer = $("answer");
  const verdict = "first \u2264 second: " + (r.le ? "yes" : "no");
  const sure = `${Math.round(100 * Math.max(r.p_le, 1 - r.p_le))} % sure`;
  const read = r.digits ? `read as ${r.digits[0]} and ${r.digits[1]}` : "";
  const unsure = $("unsure");
  if (r.unsure) {
    answer.textContent = "Not sure: " + inPageWords(r.doubt || "an input does not look like one clear digit to the model");
    answer.className = "answer doubt";
    unsure.textContent = `Leaning ${r.le ? "yes" : "no"} (${verdict}, ${sure} of the comparison)`;
    unsure.hidden = false;
    $("detail").textContent = read;
  } else {
    answer.textContent = verdict;
    answer.className = "answer " + (r.le ? "yes" : "no");
    unsure.hidden = true;
    unsure.textContent = "";
    $("detail").textContent = [sure, read].filter(Boolean).join(" \u00b7 ");
  }
  ["a", "b"].forEach((name, i) => {
    drawView(name, r.views ? r.views[i] : null);
    drawBars(name, r.digit_probs ? r.digit_probs[i] : null);
    drawThumb(name, r.regions ? r.regions[i] : null);
  });
}

function drawThumb(name, region) {
  // A thumbnail of what was sent (the image, or the drawing), with the region that was read outlined.
  const canvas = $("thumb-" + name), ctx = canvas.getContext("2d");
  const side = sides[name];
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!region || !hasInput(side)) { drawCrop(name, null); return; }
  const source = side.image || side.canvas;
  const sw = side.image ? side.image.naturalWidth : side.canvas.width;
  const sh = side.image ? side.image.naturalHeight : side.canvas.height;
  const s = Math.min(canvas.width / sw, canvas.height / sh);
  const w = sw * s, h = sh * s, x0 = (canvas.width - w) / 2, y0 = (canvas.height - h) / 2;
  ctx.drawImage(source, x0, y0, w, h);
  ctx.strokeStyle = "#e0245e";
  ctx.lineWidth = 2;
  ctx.beginPath();
  region.forEach(([fx, fy], k) => { const px = x0 + fx * w, py = y0 + fy * h; if (k) ctx.lineTo(px, py); else ctx.moveTo(px, py); });
  ctx.closePath();
  ctx.stroke();
  drawCrop(name, source, sw, sh, region);
}

function drawCrop(name, source, sw, sh, region) {
  // The part that was read, enlarged beside the thumbnail (on a photo the outline is a few pixels).
  const canvas = $("crop-" + name), ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!source) return;
  const fx = region.map((p) => p[0]), fy = region.map((p) => p[1]);
  let x = Math.min(...fx) * sw, y = Math.min(...fy) * sh;
  let w = (Math.max(...fx) - Math.min(...fx)) * sw, h = (Math.max(...fy) - Math.min(...fy)) * sh;
  const margin = 0.15 * Math.max(w, h, 1);   // a little of what surrounds it
  x -= margin; y -= margin; w += 2 * margin; h += 2 * margin;
  const s = Math.min(canvas.width / w, canvas.height / h);
  ctx.drawImage(source, x, y, w, h, (canvas.width - w * s) / 2, (canvas.height - h * s) / 2, w * s, h * s);
}

function drawView(name, view) {
  const ctx = $("view-" + name).getContext("2d");
  const img = ctx.createImageData(14, 14);
  for (let i = 0; i < 196; i++) {
    const v = view ? view[Math.floor(i / 14)][i % 14] : 0;
    img.data.set([v, v, v, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
}

function drawBars(name, probs) {
  // Ten rows always (an empty one before an answer), so that an answer does not move the page.
  const list = $("bars-" + name);
  list.textContent = "";
  const top = probs ? probs.indexOf(Math.max(...probs)) : -1;
  for (let digit = 0; digit < 10; digit++) {
    const p = probs ? probs[digit] : 0;
    const li = document.createElement("li");
    if (digit === top) li.className = "top";
    const pct = probs ? (100 * p).toFixed(p >= 0.9995 ? 0 : 1) + "%" : "";
    li.innerHTML = `<span>${digit}</span><span class="bar"><span class="fill" style="width:${(100 * p).toFixed(1)}%"></span></span><span class="pct">${pct}</span>`;
    list.appendChild(li);
  }
}

async function showModel() {
  try {
    const r = await fetch("/api/health", { headers: authHeaders });
    const h = await r.json();
    const err = h.metrics && h.metrics.test_error !== undefined ? `, recorded test error ${(100 * h.metrics.test_error).toFixed(2)} %` : "";
    $("model").textContent = `Model: ${h.model} (${h.arch}, ${h.test_time_views} test-time views${err}).`;
    $("report-link").hidden = !h.report;
    if (token) $("report-link").querySelector("a").href = "/report/?token=" + encodeURIComponent(token);
  } catch (err) {
    showError("The server is unreachable: is `digitcmp serve` still running?");
  }
}

sides.a = makeSide("a");
sides.b = makeSide("b");
showIdle();
showModel();
