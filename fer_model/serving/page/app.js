// The try-it page: send a photo (or a webcam snapshot) to the V1 endpoint, draw what comes back.
// Every text that comes from the server or the user is set with textContent, never as HTML.
"use strict";

(() => {
  const TASKS = ["emotion", "gender", "race", "age"];
  const MAX_REASON = 400; // characters of a server's refusal shown; its reasons are one line
  const $ = (id) => document.getElementById(id);
  const app = $("app");
  const photo = $("photo");
  const camera = $("camera");
  const stage = $("stage");
  const boxes = $("boxes");
  const faces = $("faces");
  const status = $("status");
  const error = $("error");
  const cameraToggle = $("camera-toggle");
  let modelName = null;
  let photoUrl = null;
  let stream = null;
  let timer = null;
  let busy = false;

  function setState(state, message) {
    app.dataset.state = state;
    status.textContent = message;
    if (state !== "error") {
      error.hidden = true;
      error.textContent = "";
    }
  }

  function showError(message) {
    setState("error", "Something went wrong; see the message below.");
    error.textContent = message;
    error.hidden = false;
  }

  // The model name is the server's (`--name`); /v1/models lists it.
  async function model() {
    if (modelName === null) {
      const response = await fetch("/v1/models");
      const body = await response.json();
      if (!response.ok || !Array.isArray(body.models) || body.models.length === 0) {
        throw new Error("The server lists no model at /v1/models.");
      }
      modelName = String(body.models[0]);
    }
    return modelName;
  }

  // A refusal is JSON {"error": "<one line>"}; anything else (a proxy's HTML page) is summarised.
  async function refusal(response) {
    let reason = response.statusText || "no reason given";
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") reason = body.error;
    } catch (_) {
      // not JSON: keep the status text
    }
    if (reason.length > MAX_REASON) reason = reason.slice(0, MAX_REASON) + "…";
    return `The server refused the image (HTTP ${response.status}): ${reason}`;
  }

  // The file's bytes as base64 (a data: URL without its "data:<type>;base64," head).
  function base64(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).slice(String(reader.result).indexOf(",") + 1));
      reader.onerror = () => reject(new Error(`Cannot read the file: ${reader.error}`));
      reader.readAsDataURL(blob);
    });
  }

  async function predict(blob) {
    const name = await model();
    // Base64 in JSON, whatever the file is: the server then names the problem of a file that is not
    // an image ("not a recognised image format"); a raw body would depend on the file's content type.
    const response = await fetch(`/v1/models/${encodeURIComponent(name)}:predict`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ instances: [{ b64: await base64(blob) }] }),
    });
    if (!response.ok) throw new Error(await refusal(response));
    const body = await response.json();
    return body.predictions[0].faces;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function percent(p) {
    return `${(100 * p).toFixed(1)}%`;
  }

  function taskSection(task, answer) {
    const section = element("section", "task");
    section.dataset.task = task;
    const heading = element("h3");
    heading.append(element("span", "", `${task}: `), element("span", "top", answer.label));
    section.append(heading);
    for (const [name, p] of Object.entries(answer.probabilities)) {
      const row = element("div", name === answer.label ? "row best" : "row");
      row.dataset.class = name;
      row.dataset.probability = String(p);
      const track = element("div", "track");
      track.setAttribute("aria-hidden", "true");
      const fill = element("div", "fill");
      fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
      track.append(fill);
      row.append(element("span", "class", name), track, element("span", "pct", percent(p)));
      section.append(row);
    }
    return section;
  }

  function faceCard(face, index) {
    const card = element("li", "face");
    card.dataset.face = String(index);
    card.append(element("h2", "", `Face ${index + 1}`));
    for (const task of TASKS) {
      if (face.predictions[task]) card.append(taskSection(task, face.predictions[task]));
    }
    return card;
  }

  function faceBox(face, index, width, height) {
    const [x, y, w, h] = face.box;
    const box = element("div", "box");
    box.dataset.face = String(index);
    // Percentages of the picture's own size: the boxes follow the picture when it is scaled down.
    box.style.left = `${(100 * x) / width}%`;
    box.style.top = `${(100 * y) / height}%`;
    box.style.width = `${(100 * w) / width}%`;
    box.style.height = `${(100 * h) / height}%`;
    const emotion = face.predictions.emotion;
    const text = emotion ? `${index + 1}: ${emotion.label}` : `${index + 1}`;
    box.append(element("span", "box-label", text));
    return box;
  }

  function draw(found, width, height) {
    boxes.replaceChildren(...found.filter((f) => Array.isArray(f.box)).map((f, i) => faceBox(f, i, width, height)));
    faces.replaceChildren(...found.map(faceCard));
  }

  function summary(found) {
    if (found.length === 0) return "No face found in this picture.";
    return found.length === 1 ? "1 face found." : `${found.length} faces found.`;
  }

  async function sendPhoto(file) {
    stopCamera();
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = URL.createObjectURL(file);
    boxes.replaceChildren();
    faces.replaceChildren();
    stage.hidden = true;
    setState("busy", `Sending ${file.name || "the photo"}…`);
    try {
      const found = await predict(file);
      photo.src = photoUrl;
      camera.hidden = true;
      try {
        await photo.decode();
      } catch (_) {
        // The server reads formats some browsers cannot show (TIFF, ...): list the answers anyway.
        faces.replaceChildren(...found.map(faceCard));
        setState("done", `${summary(found)} This browser cannot display the picture itself.`);
        return;
      }
      photo.hidden = false;
      stage.hidden = false;
      draw(found, photo.naturalWidth, photo.naturalHeight);
      setState("done", summary(found));
    } catch (e) {
      showError(e.message || String(e));
    }
  }

  // --- webcam: one snapshot every N ms while on, at most one request in flight ---

  function interval() {
    const value = Number($("interval").value);
    return Number.isFinite(value) && value >= 250 ? value : 1000;
  }

  async function snapshot() {
    if (busy || !stream || camera.videoWidth === 0) return;
    busy = true;
    const canvas = document.createElement("canvas");
    canvas.width = camera.videoWidth;
    canvas.height = camera.videoHeight;
    canvas.getContext("2d").drawImage(camera, 0, 0);
    try {
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
      const found = await predict(blob);
      if (stream) {
        draw(found, canvas.width, canvas.height);
        setState("done", `Webcam: ${summary(found)}`);
      }
    } catch (e) {
      showError(e.message || String(e));
    } finally {
      busy = false;
    }
  }

  async function startCamera() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError("This browser gives this page no webcam access (it needs the page served from 127.0.0.1, localhost or over HTTPS).");
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    } catch (e) {
      showError(`Cannot open the webcam: ${e.name || "error"}: ${e.message || ""}`);
      return;
    }
    camera.srcObject = stream;
    await camera.play();
    photo.hidden = true;
    camera.hidden = false;
    stage.hidden = false;
    boxes.replaceChildren();
    faces.replaceChildren();
    cameraToggle.setAttribute("aria-pressed", "true");
    cameraToggle.textContent = "Stop webcam";
    setState("busy", "Webcam on.");
    timer = setInterval(snapshot, interval());
  }

  function stopCamera() {
    if (!stream) return;
    clearInterval(timer);
    timer = null;
    for (const track of stream.getTracks()) track.stop();
    stream = null;
    camera.srcObject = null;
    camera.hidden = true;
    cameraToggle.setAttribute("aria-pressed", "false");
    cameraToggle.textContent = "Start webcam";
    setState("idle", "Webcam off.");
  }

  // --- wiring ---

  $("file").addEventListener("change", (event) => {
    const file = event.target.files && event.target.files[0];
    if (file) sendPhoto(file);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files && event.dataTransfer.files[0];
    if (file) sendPhoto(file);
  });
  cameraToggle.addEventListener("click", () => (stream ? stopCamera() : startCamera()));
  $("interval").addEventListener("change", () => {
    if (stream) {
      clearInterval(timer);
      timer = setInterval(snapshot, interval());
    }
  });
})();
