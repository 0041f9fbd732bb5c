// Calls to the prediction API. Every failure becomes an ApiError whose message
// is a sentence the page can show as it is.

/** An API failure: `message` is the server's detail sentence, `code` its error code. */
export class ApiError extends Error {
  constructor(message, { code, status }) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.status = status;
  }
}

/** Returns a Promise of the prediction JSON for a PNG data URL. */
export function predict(dataUrl) {
  return post(predictionsUrl(), { image: dataUrl });
}

/** Returns a Promise of the updated prediction JSON; payload is {correct: true} or {label: n}. */
export function giveFeedback(id, payload) {
  return post(`${predictionsUrl()}${encodeURIComponent(id)}/feedback/`, payload);
}

// The page renders the URL (from Django's URLconf, so it follows where the site is mounted);
// no second copy lives here to drift from it.
function predictionsUrl() {
  const url = document.querySelector("[data-api-predictions]")?.dataset.apiPredictions;
  if (!url) throw new Error("The page does not say where the API is (data-api-predictions).");
  return url;
}

// Django refuses unsafe requests without the token; the page carries it in the
// hidden input that {% csrf_token %} renders (see Django's CSRF how-to).
function csrfToken() {
  return document.querySelector("input[name=csrfmiddlewaretoken]")?.value ?? "";
}

async function post(url, body) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "X-CSRFToken": csrfToken(),
      },
      body: JSON.stringify(body),
    });
  } catch {
    throw new ApiError("Could not reach the server. Check your connection and try again.", {
      code: "network_error",
      status: 0,
    });
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(
      typeof data?.detail === "string" ? data.detail : `Something went wrong on the server (error ${response.status}). Please try again.`,
      { code: data?.code || "http_error", status: response.status },
    );
  }
  return data;
}
