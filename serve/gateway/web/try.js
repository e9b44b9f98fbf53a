// The try-it page: a digit in (drawn, uploaded or photographed), the pipeline's answer out: the
// image sent, the 28x28 image the network saw, the ten probabilities, the label and whether it is
// certain, who answered, and a correction sent to /feedback like any client's.
import { call, element, explain, percent, setUpKeyForm } from "./common.js";

const MAX_SIDE = 1600; // pixels: a 12-megapixel photo is scaled down here, the pipeline needs far less
const MAX_BYTES = 2_000_000; // a file above this is re-encoded, far below the gateway's body limit
const READ_AFTER_MS = 700; // a drawing is read this long after the last stroke ends

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ink = pad.getContext("2d");
let drawing = false;
let drawn = false;
let readTimer = null;
let answered = null; // the request id and label of the answer on screen, for feedback

function clearPad() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  drawn = false;
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [((event.clientX - box.left) * pad.width) / box.width, ((event.clientY - box.top) * pad.height) / box.height];
}

function setUpPad() {
  clearPad();
  ink.lineWidth = 20;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.strokeStyle = "#111";
  pad.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    clearTimeout(readTimer);
    drawing = true;
    const [x, y] = point(event);
    ink.beginPath();
    ink.moveTo(x, y);
    ink.lineTo(x + 0.1, y + 0.1);
    ink.stroke();
    drawn = true;
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const [x, y] = point(event);
    ink.lineTo(x, y);
    ink.stroke();
  });
  const end = () => {
    if (!drawing) return;
    drawing = false;
    readTimer = setTimeout(readDrawing, READ_AFTER_MS);
  };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => {
    clearTimeout(readTimer);
    clearPad();
  });
  $("read").addEventListener("click", readDrawing);
}

async function readDrawing() {
  if (!drawn) {
    $("status").textContent = "Draw a digit on the pad first.";
    return;
  }
  const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  await score(blob);
}

// A file as it will be sent: as chosen, unless it is large (then scaled to MAX_SIDE, as JPEG).
// A file the browser cannot decode is sent as is: the gateway says what it accepts.
async function fitted(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return file;
  }
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  if (scale === 1 && file.size <= MAX_BYTES) return file;
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
}

function base64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(new Error("the file could not be read"));
    reader.readAsDataURL(blob);
  });
}

async function fileChosen(event) {
  const file = event.target.files[0];
  event.target.value = ""; // choosing the same file again reads it again
  if (file) await score(await fitted(file));
}

function forget() {
  answered = null;
  $("feedback").hidden = true;
  $("feedback-status").textContent = "";
  $("bars").replaceChildren();
  for (const id of ["confidence", "uncertain", "who"]) $(id).textContent = "";
  $("label").textContent = "–";
  $("seen").getContext("2d").clearRect(0, 0, 28, 28);
}

async function score(blob) {
  forget();
  $("status").textContent = "Reading…";
  const sent = $("sent");
  if (sent.src) URL.revokeObjectURL(sent.src);
  sent.src = URL.createObjectURL(blob);
  try {
    const body = {
      dataframe_split: { columns: ["image"], data: [[await base64(blob)]] },
      params: { return_input: true },
    };
    const { payload, headers } = await call("/invocations", { method: "POST", body });
    show(payload.predictions[0], headers);
    $("status").textContent = "Done.";
  } catch (error) {
    $("status").textContent = explain(error);
  }
  document.body.dataset.answers = String(Number(document.body.dataset.answers || 0) + 1); // for tests and tools
}

function show(prediction, headers) {
  $("label").textContent = String(prediction.label);
  $("confidence").textContent = `confidence ${percent(prediction.confidence)}`;
  $("uncertain").textContent = prediction.uncertain ? "uncertain: below the model's threshold" : "certain";
  $("uncertain").className = prediction.uncertain ? "flag warn" : "flag ok";
  const bars = prediction.probabilities.map((p, digit) => {
    const item = element("li", null, digit === prediction.label ? "top" : "");
    const bar = element("span", null, "bar");
    bar.style.width = percent(p, 2);
    item.append(element("span", String(digit), "digit"), element("span", null, "track"), element("span", percent(p), "value"));
    item.children[1].append(bar);
    item.setAttribute("aria-label", `${digit}: ${percent(p)}`);
    return item;
  });
  $("bars").replaceChildren(...bars);
  if (Array.isArray(prediction.input)) drawSeen(prediction.input);
  const variant = headers.get("X-Variant");
  const version = headers.get("X-Model-Version");
  const requestId = headers.get("X-Request-ID");
  answered = requestId ? { requestId, label: prediction.label } : null;
  $("who").textContent =
    (variant ? `Answered by ${variant}, model version ${version}. ` : "Which variant answered is shown to admin keys. ") +
    `Request ${requestId}.`;
  $("feedback").hidden = !answered;
}

function drawSeen(values) {
  const seen = $("seen").getContext("2d");
  const image = seen.createImageData(28, 28);
  values.forEach((v, i) => {
    const grey = Math.round(255 * Math.min(1, Math.max(0, v)));
    image.data.set([grey, grey, grey, 255], 4 * i);
  });
  seen.putImageData(image, 0, 0);
}

// The true label of the answer on screen, to /feedback: the A/B test counts right and wrong.
async function sendFeedback(label) {
  if (!answered) return;
  try {
    await call("/feedback", { method: "POST", body: { request_id: answered.requestId, label } });
    $("feedback-status").textContent = `Thank you: recorded that it was a ${label}.`;
  } catch (error) {
    $("feedback-status").textContent = explain(error);
  }
}

setUpKeyForm();
setUpPad();
for (let digit = 0; digit <= 9; digit += 1) $("truth").append(new Option(String(digit), String(digit)));
$("upload").addEventListener("change", fileChosen);
$("camera").addEventListener("change", fileChosen);
$("feedback").addEventListener("submit", (event) => {
  event.preventDefault();
  sendFeedback(Number($("truth").value));
});
$("right").addEventListener("click", () => sendFeedback(answered?.label));
document.body.dataset.ready = "true";
