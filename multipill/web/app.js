// The page: send the photo to POST /predict, show every branch, the OCR boxes, the card; Grad-CAM on request.
"use strict";

const apiKey = document.querySelector('meta[name="multipill-api-key"]').content;
const $ = (id) => document.getElementById(id);
function pct(p) {
  if (p === null || p === undefined) return "–";
  if (p >= 0.99995) return "> 99.99%";
  return (100 * p).toFixed(p > 0.999 ? 2 : 1) + "%";
}
let photo = null;

function headers() {
  return apiKey ? { "X-API-Key": apiKey } : {};
}

async function post(path, file) {
  const body = new FormData();
  body.append("file", file, file.name || "photo.jpg");
  const response = await fetch(path, { method: "POST", body, headers: headers() });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) { /* not JSON: keep the status text */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

function cell(row, text) {
  const td = row.insertCell();
  td.textContent = text;
  return td;
}

function showBranches(r) {
  const body = $("branches").tBodies[0];
  body.replaceChildren();
  for (const { label, probability } of r.top_k) {
    const row = body.insertRow();
    const head = document.createElement("th");
    head.scope = "row";
    head.textContent = label;
    row.appendChild(head);
    cell(row, pct(r.image_proba[label]));
    cell(row, r.text_proba ? pct(r.text_proba[label]) : "no text");
    cell(row, pct(probability));
  }
}

function drawBoxes(r) {
  const canvas = $("boxes");
  const image = new Image();
  image.onload = () => {
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0);
    // boxes are in the decoded photo's pixels; the browser shows the photo upright at its own size
    const sx = image.naturalWidth / r.image_size[0], sy = image.naturalHeight / r.image_size[1];
    ctx.lineWidth = Math.max(2, image.naturalWidth / 300);
    ctx.strokeStyle = "#00c853";
    ctx.fillStyle = "#00c853";
    ctx.font = `${Math.max(12, image.naturalWidth / 40)}px sans-serif`;
    for (const piece of r.ocr_boxes) {
      ctx.beginPath();
      piece.box.forEach(([x, y], i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x * sx, y * sy));
      ctx.closePath();
      ctx.stroke();
    }
    canvas.setAttribute("aria-label", `The photo with ${r.ocr_boxes.length} boxes where text was read`);
  };
  image.src = URL.createObjectURL(photo);
}

function showCard(card) {
  const facts = $("facts");
  facts.replaceChildren();
  $("card").hidden = !card;
  if (!card) return;
  for (const [name, fact] of Object.entries(card)) {
    if (name === "images") continue;
    const dt = document.createElement("dt");
    dt.textContent = name.replace(/_/g, " ");
    const dd = document.createElement("dd");
    if (fact && typeof fact === "object" && "value" in fact) {
      dd.textContent = Array.isArray(fact.value) ? fact.value.join(", ") : (fact.value ?? "unknown");
      if (fact.source) {
        const source = document.createElement("small");
        if (/^https?:\/\//.test(fact.source)) {
          const a = document.createElement("a");
          a.href = fact.source;
          a.rel = "noopener noreferrer";
          a.textContent = "source: " + fact.source;
          source.appendChild(a);
        } else {
          source.textContent = "source: " + fact.source;
        }
        dd.appendChild(source);
      }
    } else {
      dd.textContent = Array.isArray(fact) ? fact.join("; ") : String(fact).slice(0, 300);
    }
    facts.append(dt, dd);
  }
}

function show(r) {
  $("result").hidden = false;
  $("answer").textContent = r.abstained ? `Best guess: ${r.label}` : r.label;
  $("confidence").textContent = `confidence ${pct(r.confidence)}`;
  $("abstain").hidden = !r.abstained;
  const whys = {
    "unknown product": "Why: the photo is unlike every product this model knows (unknown product).",
    "text matches another product":
      "Why: the printed text matches another product's card, one known from its card alone.",
  };
  const why = whys[r.abstain_reason] || "Why: low confidence, below what this model needs to answer.";
  $("abstain-why").textContent = r.abstained ? why : "";
  const sources = { fused: "image and printed text (fused)", image: "the image alone", card: "its product card" };
  $("source").textContent = "Answered from " + (sources[r.source] || r.source) + ".";
  showBranches(r);
  $("ocr-text").textContent = r.ocr_text || `(no text read: ${r.ocr_status})`;
  drawBoxes(r);
  showCard(r.card);
  $("card-heading").textContent = r.abstained ? `Product card of the best guess (${r.label}): check it against the pack`
    : "Product card";
  $("notes").replaceChildren(...r.notes.map((n) => Object.assign(document.createElement("li"), { textContent: n })));
  $("warning").textContent = r.warning;
  $("model").textContent = `model ${r.model.name}, multipill ${r.model.version}`;
  $("gradcam").hidden = true;
}

$("photo").addEventListener("change", () => {
  photo = $("photo").files[0] || null;
  $("identify").disabled = !photo;
  if (photo) $("upload").requestSubmit();
});

$("upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!photo) return;
  $("identify").disabled = true;
  $("status").textContent = "Identifying…";
  try {
    show(await (await post("/predict", photo)).json());
    $("status").textContent = "Done.";
    $("answer-heading").focus();
  } catch (error) {
    $("result").hidden = true;
    $("status").textContent = "Could not identify this photo: " + error.message;
  } finally {
    $("identify").disabled = !photo;
  }
});

$("explain").addEventListener("click", async () => {
  $("explain").disabled = true;
  $("status").textContent = "Computing Grad-CAM…";
  try {
    const blob = await (await post("/explain", photo)).blob();
    $("gradcam").onload = () => {
      $("gradcam").hidden = false;
      $("status").textContent = "Grad-CAM shown below.";
    };
    $("gradcam").src = URL.createObjectURL(blob);
  } catch (error) {
    $("status").textContent = "Grad-CAM failed: " + error.message;
  } finally {
    $("explain").disabled = false;
  }
});
