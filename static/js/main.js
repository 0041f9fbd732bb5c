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

// The prediction on screen, while it still describes the drawing on the pad; feedback goes to it.
let prediction = null;
let predicting = false;
// Counts changes to the drawing, so an answer can tell whether the pad still holds what it read.
let revision = 0;

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

// On a phone the answer sits below the pad. Scroll just far enough to show the digit, the
// feedback buttons and their thanks together, so that as much of the drawing as fits stays in view.
function revealAnswer() {
  const margin = 8;
  const top = verdict.getBoundingClientRect().top - margin;
  const bottom = (feedback.hidden ? verdict : feedbackStatus).getBoundingClientRect().bottom + margin;
  // Scrolling down by `distance` lifts both edges: the bottom must come into the window, the top stay in it.
  const distance = top < 0 ? top : Math.min(Math.max(0, bottom - window.innerHeight), top);
  if (distance === 0) return;
  const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  window.scrollBy({ top: distance, behavior: smooth ? "smooth" : "auto" });
}

// Hidden, not merely dimmed: hidden controls leave the accessibility tree and the tab order too.
function hideAnswerParts() {
  details.hidden = true;
  feedback.hidden = true;
}

function showIdle() {
  prediction = null;
  showState("idle", "?", "Draw a digit and press Predict.");
  hideAnswerParts();
}

function showError(text) {
  prediction = null;
  showState("error", "", text);
  hideAnswerParts();
  revealAnswer();
}

// The answer was for a drawing that has changed since: keep the digit for comparison, take
// away the feedback so that no claim is made about a drawing that is no longer there.
function showStale(label) {
  prediction = null;
  showState("stale", String(label), "That was before you changed the drawing. Press Predict again.");
  hideAnswerParts();
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
  revealAnswer();
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
  const read = revision;
  // aria-disabled rather than disabled: a disabled button drops keyboard focus.
  predictButton.setAttribute("aria-disabled", "true");
  showState("loading", "…", "Reading your digit…");
  try {
    const result = await predict(pad.toDataURL());
    // The visitor may have drawn, undone or cleared while the request was on its way.
    if (read === revision) showPrediction(result);
    else if (pad.isEmpty()) showIdle();
    else showStale(result.predicted_label);
  } catch (error) {
    if (read === revision) {
      showError(error instanceof ApiError ? error.message : "Something went wrong. Please try again.");
    } else {
      showIdle();
    }
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

// Every change to the drawing (a new stroke, undo, clear) outdates what is shown about it:
// an error goes away as soon as drawing starts, an answer becomes stale, an empty pad is idle.
function onDrawingChange() {
  revision += 1;
  padBox.dataset.empty = String(pad.isEmpty());
  const state = verdict.dataset.state;
  if (state === "loading") return;
  if (pad.isEmpty() || state === "error") showIdle();
  else if (state === "result") showStale(prediction.predicted_label);
}

function clearAll() {
  if (!pad.isEmpty()) pad.clear();
  // Clearing an empty pad changes nothing, but still dismisses an error about it.
  else if (!predicting) showIdle();
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

pad.addEventListener("change", onDrawingChange);
action("undo").addEventListener("click", () => pad.undo());
action("clear").addEventListener("click", clearAll);
predictButton.addEventListener("click", runPrediction);
correctButton.addEventListener("click", () => sendFeedback({ correct: true }));
for (const button of labelButtons) {
  button.addEventListener("click", () => sendFeedback({ label: Number(button.dataset.label) }));
}
document.addEventListener("keydown", onKeyDown);
