// The drawing page: wires the DrawingPad to the API and writes the answer.

import { ApiError, giveFeedback, predict } from "./api.js";
import { DrawingPad } from "./drawing-pad.js";

const find = (role) => document.querySelector(`[data-role="${role}"]`);
const action = (name) => document.querySelector(`[data-action="${name}"]`);

const padBox = find("pad");
const verdict = find("verdict");
const digit = find("digit");
const message = find("message");
const details = find("details");
const inputImage = find("input-image");
const chartRows = [...find("chart").querySelectorAll("[data-digit]")];
const feedback = find("feedback");
const feedbackStatus = find("feedback-status");
const predictButton = action("predict");
const correctButton = action("correct");
const labelButtons = [...document.querySelectorAll('[data-action="label"]')];

const pad = new DrawingPad(find("canvas"));

let prediction = null;
let predicting = false;

/** Returns a probability as a short percentage that never rounds to a false 0% or 100%. */
function formatPercent(probability) {
  const percent = Math.round(probability * 100);
  if (percent === 0 && probability > 0) return "<1%";
  if (percent === 100 && probability < 1) return ">99%";
  return `${percent}%`;
}

function visuallyHidden(text) {
  const span = document.createElement("span");
  span.className = "visually-hidden";
  span.textContent = text;
  return span;
}

function showState(state, digitText, ...messageParts) {
  verdict.dataset.state = state;
  digit.textContent = digitText;
  message.replaceChildren(...messageParts);
}

// On a phone the answer sits below the pad: bring its first line into view.
function revealVerdict() {
  const rect = verdict.getBoundingClientRect();
  if (rect.top >= 0 && rect.bottom <= window.innerHeight) return;
  const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  verdict.scrollIntoView({ block: "nearest", behavior: smooth ? "smooth" : "auto" });
}

function showIdle() {
  prediction = null;
  showState("idle", "?", "Draw a digit and press Predict.");
  details.hidden = true;
  feedback.hidden = true;
}

function showError(text) {
  prediction = null;
  showState("error", "", text);
  details.hidden = true;
  feedback.hidden = true;
  revealVerdict();
}

function showPrediction(result) {
  prediction = result;
  const percent = formatPercent(result.confidence);
  showState("result", String(result.predicted_label),
    visuallyHidden(`The model reads ${result.predicted_label}, `), `${percent} confident`);
  inputImage.src = result.input_image;
  for (const row of chartRows) {
    const value = result.probabilities[Number(row.dataset.digit)];
    row.style.setProperty("--p", value);
    row.querySelector(".chart-value").textContent = formatPercent(value);
    row.classList.toggle("is-top", Number(row.dataset.digit) === result.predicted_label);
  }
  details.hidden = false;
  feedback.hidden = false;
  showFeedback(result);
  revealVerdict();
}

// Marks which answer the visitor gave, if any (a label equal to the prediction means "correct").
function showFeedback(result) {
  const label = result.feedback_label;
  const correct = label !== null && label === result.predicted_label;
  correctButton.setAttribute("aria-pressed", String(correct));
  for (const button of labelButtons) {
    button.setAttribute("aria-pressed", String(!correct && Number(button.dataset.label) === label));
  }
  const article = label === 8 ? "an" : "a";
  feedbackStatus.textContent = label === null ? "" : `Thanks — noted as ${article} ${label}.`;
}

async function runPrediction() {
  if (predicting) return;
  predicting = true;
  // aria-disabled rather than disabled: a disabled button drops keyboard focus.
  predictButton.setAttribute("aria-disabled", "true");
  showState("loading", "…", "Reading your digit…");
  try {
    showPrediction(await predict(pad.toDataURL()));
  } catch (error) {
    showError(error instanceof ApiError ? error.message : "Something went wrong. Please try again.");
    if (!(error instanceof ApiError)) console.error(error);
  } finally {
    predicting = false;
    predictButton.removeAttribute("aria-disabled");
  }
}

async function sendFeedback(payload) {
  if (prediction === null || predicting) return;
  const id = prediction.id;
  feedbackStatus.textContent = "Sending…";
  try {
    const updated = await giveFeedback(id, payload);
    // A new prediction may have arrived meanwhile; its panel is not this one.
    if (prediction?.id === id) {
      prediction = updated;
      showFeedback(updated);
    }
  } catch (error) {
    if (prediction?.id === id) feedbackStatus.textContent = error.message;
  }
}

function clearAll() {
  pad.clear();
  if (!predicting) showIdle();
}

function isTyping(target) {
  return target instanceof HTMLElement && (target.isContentEditable || target.matches("input, textarea, select"));
}

// Enter, Escape/Delete, Ctrl/Cmd+Z and the digit keys work anywhere on the page,
// except where the focused control already gives the key a meaning.
function onKeyDown(event) {
  if (event.defaultPrevented || event.altKey || isTyping(event.target)) return;
  const command = event.ctrlKey || event.metaKey;
  if (command && !event.shiftKey && event.key.toLowerCase() === "z") {
    event.preventDefault();
    pad.undo();
  } else if (command) {
    return;
  } else if (event.key === "Enter") {
    if (event.target instanceof Element && event.target.closest("button, a, summary")) return;
    event.preventDefault();
    runPrediction();
  } else if (event.key === "Escape" || event.key === "Delete") {
    clearAll();
  } else if (/^[0-9]$/.test(event.key) && prediction !== null && !event.repeat) {
    sendFeedback({ label: Number(event.key) });
  }
}

pad.addEventListener("change", () => {
  padBox.dataset.empty = String(pad.isEmpty());
});
action("undo").addEventListener("click", () => pad.undo());
action("clear").addEventListener("click", clearAll);
predictButton.addEventListener("click", runPrediction);
correctButton.addEventListener("click", () => sendFeedback({ correct: true }));
for (const button of labelButtons) {
  button.addEventListener("click", () => sendFeedback({ label: Number(button.dataset.label) }));
}
document.addEventListener("keydown", onKeyDown);
