// A canvas you can draw on with a mouse, a finger or a pen (Pointer Events).
//
// Strokes are kept as points in canvas-relative units (0..1), so the drawing
// survives resizes and pixel-ratio changes and exports the same PNG on every
// screen: the server sees the same image whatever device drew it.

const EXPORT_SIZE = 280;

export class DrawingPad extends EventTarget {
  #canvas;
  #context;
  #ink;
  #lineWidthRatio;
  #strokes = [];
  #activeStroke = null;
  #activePointer = null;
  #width = 0;
  #height = 0;

  /** Wires pointer handling to `canvas`; dispatches "change" whenever the strokes change. */
  constructor(canvas, { ink = "#111", lineWidthRatio = 1 / 14 } = {}) {
    super();
    this.#canvas = canvas;
    this.#context = canvas.getContext("2d");
    this.#ink = ink;
    this.#lineWidthRatio = lineWidthRatio;

    canvas.addEventListener("pointerdown", (event) => this.#onPointerDown(event));
    canvas.addEventListener("pointermove", (event) => this.#onPointerMove(event));
    canvas.addEventListener("pointerup", (event) => this.#onPointerEnd(event));
    canvas.addEventListener("pointercancel", (event) => this.#onPointerEnd(event));
    canvas.addEventListener("lostpointercapture", (event) => this.#onPointerEnd(event));

    new ResizeObserver(() => this.#resize()).observe(canvas);
    this.#watchPixelRatio();
    this.#resize();
  }

  /** Returns true when nothing has been drawn. */
  isEmpty() {
    return this.#strokes.length === 0;
  }

  /** Removes every stroke. */
  clear() {
    if (this.isEmpty()) return;
    this.#strokes = [];
    this.#activeStroke = null;
    this.#redraw();
    this.#changed();
  }

  /** Removes the last stroke. */
  undo() {
    if (this.isEmpty()) return;
    const removed = this.#strokes.pop();
    if (removed === this.#activeStroke) this.#activeStroke = null;
    this.#redraw();
    this.#changed();
  }

  /** Returns a PNG data URL of the drawing: black ink on white, `size` pixels square. */
  toDataURL(size = EXPORT_SIZE) {
    const canvas = document.createElement("canvas");
    canvas.width = size;
    canvas.height = size;
    const context = canvas.getContext("2d");
    // Fill explicitly: a transparent export would depend on how the server
    // flattens alpha, a white one does not.
    context.fillStyle = "#fff";
    context.fillRect(0, 0, size, size);
    this.#paint(context, size, size, "#000");
    return canvas.toDataURL("image/png");
  }

  // Resizing a canvas wipes it, so the backing store is set to CSS size x
  // devicePixelRatio (sharp lines on high-DPI screens), the context scaled so
  // drawing code can think in CSS pixels, and the strokes painted again.
  #resize() {
    const rect = this.#canvas.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(rect.width * ratio);
    const height = Math.round(rect.height * ratio);
    if (width === 0 || height === 0) return;
    if (this.#canvas.width === width && this.#canvas.height === height && this.#width === rect.width) return;
    this.#canvas.width = width;
    this.#canvas.height = height;
    this.#width = rect.width;
    this.#height = rect.height;
    this.#context.scale(ratio, ratio);
    this.#redraw();
  }

  // Moving the window to a screen with another pixel ratio changes no CSS size,
  // so ResizeObserver stays silent; a resolution media query notices.
  #watchPixelRatio() {
    const query = window.matchMedia(`(resolution: ${window.devicePixelRatio || 1}dppx)`);
    query.addEventListener("change", () => {
      this.#resize();
      this.#watchPixelRatio();
    }, { once: true });
  }

  #onPointerDown(event) {
    // Only the main button of the first pointer draws: a second finger, a right
    // click or a pen's eraser button must not start a stroke.
    if (!event.isPrimary || event.button !== 0 || this.#activePointer !== null) return;
    this.#canvas.setPointerCapture(event.pointerId);
    this.#activePointer = event.pointerId;
    this.#activeStroke = [this.#point(event)];
    this.#strokes.push(this.#activeStroke);
    this.#drawDot(this.#activeStroke[0]);
    this.#changed();
  }

  #onPointerMove(event) {
    if (event.pointerId !== this.#activePointer || this.#activeStroke === null) return;
    // Browsers fire pointermove at most once per frame; the coalesced events
    // hold every point the device reported in between, so fast strokes stay smooth.
    const coalesced = event.getCoalescedEvents?.() ?? [];
    for (const sample of coalesced.length > 0 ? coalesced : [event]) {
      const point = this.#point(sample);
      const previous = this.#activeStroke[this.#activeStroke.length - 1];
      this.#activeStroke.push(point);
      this.#drawSegment(previous, point);
    }
  }

  #onPointerEnd(event) {
    if (event.pointerId !== this.#activePointer) return;
    this.#activePointer = null;
    this.#activeStroke = null;
  }

  #point(event) {
    const rect = this.#canvas.getBoundingClientRect();
    return { x: (event.clientX - rect.left) / rect.width, y: (event.clientY - rect.top) / rect.height };
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }

  #setPen(context, width, colour) {
    context.strokeStyle = colour;
    context.fillStyle = colour;
    context.lineWidth = width * this.#lineWidthRatio;
    context.lineCap = "round";
    context.lineJoin = "round";
  }

  #drawDot(point) {
    const context = this.#context;
    this.#setPen(context, this.#width, this.#ink);
    context.beginPath();
    context.arc(point.x * this.#width, point.y * this.#height, context.lineWidth / 2, 0, 2 * Math.PI);
    context.fill();
  }

  #drawSegment(from, to) {
    const context = this.#context;
    this.#setPen(context, this.#width, this.#ink);
    context.beginPath();
    context.moveTo(from.x * this.#width, from.y * this.#height);
    context.lineTo(to.x * this.#width, to.y * this.#height);
    context.stroke();
  }

  #redraw() {
    this.#context.clearRect(0, 0, this.#width, this.#height);
    this.#paint(this.#context, this.#width, this.#height, this.#ink);
  }

  #paint(context, width, height, colour) {
    this.#setPen(context, width, colour);
    for (const stroke of this.#strokes) {
      context.beginPath();
      if (stroke.length === 1) {
        context.arc(stroke[0].x * width, stroke[0].y * height, context.lineWidth / 2, 0, 2 * Math.PI);
        context.fill();
        continue;
      }
      context.moveTo(stroke[0].x * width, stroke[0].y * height);
      for (const point of stroke.slice(1)) context.lineTo(point.x * width, point.y * height);
      context.stroke();
    }
  }
}
