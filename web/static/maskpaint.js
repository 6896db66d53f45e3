/* retouch web page: paint an inpainting mask on one photo (the #painter dialog).
 *
 * The painting is kept as a list of operations in the image's own pixels (strokes of the
 * brush or the eraser, and clears), so it can be undone, shown at any size, edited again
 * later and rendered once, at the photo's full resolution, as the mask: an opaque PNG,
 * white where to fill, black where to keep.
 *
 *   MaskPaint.open({file, name, ops}) -> Promise of {file, ops} (done) or null (cancelled)
 */
(function () {
  "use strict";

  var t = window.I18N.t;
  var OVERLAY = "#ff2d55"; // shown at the overlay canvas's CSS opacity

  function $(id) {
    return document.getElementById(id);
  }

  function stemOf(name) {
    var base = String(name).split("/").pop();
    var dot = base.lastIndexOf(".");
    return dot > 0 ? base.slice(0, dot) : base;
  }

  /**
   * Draw ``ops`` on ``ctx``, whose pixels are ``scale`` times the image's.
   * mask=true: black background, white paint (the mask itself); else a coloured overlay on
   * transparency, the eraser cutting it away.
   */
  function drawOps(ctx, ops, scale, mask) {
    var w = ctx.canvas.width;
    var h = ctx.canvas.height;
    ctx.save();
    ctx.globalCompositeOperation = "source-over";
    if (mask) {
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, w, h);
    } else {
      ctx.clearRect(0, 0, w, h);
    }
    ctx.restore();
    ops.forEach(function (op) {
      drawOp(ctx, op, scale, mask, 0);
    });
  }

  /** One operation, from its point ``from`` on (live drawing adds the newest segment). */
  function drawOp(ctx, op, scale, mask, from) {
    ctx.save();
    if (op.tool === "clear") {
      if (mask) {
        ctx.fillStyle = "#000";
        ctx.fillRect(0, 0, ctx.canvas.width, ctx.canvas.height);
      } else {
        ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
      }
      ctx.restore();
      return;
    }
    var erase = op.tool === "eraser";
    var colour = mask ? (erase ? "#000" : "#fff") : OVERLAY;
    ctx.globalCompositeOperation = erase && !mask ? "destination-out" : "source-over";
    ctx.strokeStyle = colour;
    ctx.fillStyle = colour;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = op.size * scale;
    var pts = op.points;
    if (pts.length === 1 || from >= pts.length - 1) {
      var last = pts[pts.length - 1];
      ctx.beginPath();
      ctx.arc(last[0] * scale, last[1] * scale, (op.size * scale) / 2, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      ctx.beginPath();
      ctx.moveTo(pts[from][0] * scale, pts[from][1] * scale);
      for (var i = from + 1; i < pts.length; i++) ctx.lineTo(pts[i][0] * scale, pts[i][1] * scale);
      ctx.stroke();
    }
    ctx.restore();
  }

  /** The painting as the mask PNG at width x height, or null when nothing is painted. */
  function renderMask(ops, width, height, name) {
    var canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    var ctx = canvas.getContext("2d", { willReadFrequently: true });
    drawOps(ctx, ops, 1, true);
    // Hard edges: the anti-aliased rims of the strokes become white or black.
    var data = ctx.getImageData(0, 0, width, height);
    var px = data.data;
    var painted = false;
    for (var i = 0; i < px.length; i += 4) {
      var v = px[i] >= 128 ? 255 : 0;
      if (v) painted = true;
      px[i] = px[i + 1] = px[i + 2] = v;
      px[i + 3] = 255;
    }
    if (!painted) return Promise.resolve(null);
    ctx.putImageData(data, 0, 0);
    return new Promise(function (resolve, reject) {
      canvas.toBlob(function (blob) {
        if (!blob) reject(new Error(t("paint.error.encode")));
        else resolve(new File([blob], stemOf(name) + ".png", { type: "image/png" }));
      }, "image/png");
    });
  }

  // -- the dialog ---------------------------------------------------------------------------

  var session = null; // the open editor: {img, width, height, ops, tool, size, scale, ...}

  function open(options) {
    if (session) return Promise.resolve(null);
    var dialog = $("painter");
    return new Promise(function (resolve) {
      var url = URL.createObjectURL(options.file);
      var img = $("paint-image");
      session = {
        name: options.name,
        ops: (options.ops || []).slice(),
        tool: "brush",
        resolve: resolve,
        url: url,
        drawing: null
      };
      $("painter-title").textContent = t("paint.title", { name: options.name });
      message("");
      $("paint-brush").checked = true;
      $("paint-stage").hidden = true;
      $("paint-loading").hidden = false;
      setBusy(true);
      dialog.showModal();
      img.onload = function () {
        if (!session || session.url !== url) return;
        session.width = img.naturalWidth;
        session.height = img.naturalHeight;
        var longest = Math.max(session.width, session.height);
        var size = $("paint-size");
        size.min = "1";
        size.max = String(Math.max(8, Math.round(longest / 4)));
        size.value = String(options.size || Math.max(4, Math.round(longest / 30)));
        $("paint-loading").hidden = true;
        $("paint-stage").hidden = false;
        setBusy(false);
        showSize();
        layout();
        $("paint-canvas").focus();
      };
      img.onerror = function () {
        if (!session || session.url !== url) return;
        $("paint-loading").hidden = true;
        message(t("paint.error.decode", { name: options.name }));
      };
      img.src = url;
    });
  }

  function setBusy(busy) {
    ["paint-brush", "paint-eraser", "paint-size", "paint-undo", "paint-clear", "paint-done"].forEach(
      function (id) {
        $(id).disabled = busy;
      }
    );
    if (!busy) updateUndo();
  }

  function updateUndo() {
    $("paint-undo").disabled = !session || !session.ops.length;
    $("paint-clear").disabled = !session || !painted();
  }

  /** Whether anything is left painted after the last clear (erasing may still empty it). */
  function painted() {
    for (var i = session.ops.length - 1; i >= 0; i--) {
      var op = session.ops[i];
      if (op.tool === "clear") return false;
      if (op.tool === "brush") return true;
    }
    return false;
  }

  /** A message beside the dialog's buttons (where it does not move the photo). */
  function message(text) {
    $("paint-error").textContent = text || "";
  }

  function showSize() {
    $("paint-size-value").textContent = t("paint.size.value", { size: $("paint-size").value });
  }

  /** Fit the photo in the dialog and redraw the overlay at the shown size. */
  function layout() {
    if (!session || !session.width) return;
    var stage = $("paint-stage");
    var room = stage.parentElement.clientWidth || window.innerWidth * 0.9;
    var maxW = Math.max(120, room);
    var maxH = Math.max(120, window.innerHeight - 260);
    var k = Math.min(maxW / session.width, maxH / session.height);
    var cssW = Math.max(1, Math.round(session.width * k));
    var cssH = Math.max(1, Math.round(session.height * k));
    var img = $("paint-image");
    var canvas = $("paint-canvas");
    img.style.width = canvas.style.width = cssW + "px";
    img.style.height = canvas.style.height = cssH + "px";
    stage.style.width = cssW + "px";
    stage.style.height = cssH + "px";
    // Overlay pixels: the screen's, but never more than the photo's own.
    session.scale = Math.min(1, k * (window.devicePixelRatio || 1));
    canvas.width = Math.max(1, Math.round(session.width * session.scale));
    canvas.height = Math.max(1, Math.round(session.height * session.scale));
    redraw();
  }

  function redraw() {
    drawOps($("paint-canvas").getContext("2d"), session.ops, session.scale, false);
    updateUndo();
  }

  /** A pointer event's position in the photo's pixels. */
  function imagePoint(e) {
    var rect = $("paint-canvas").getBoundingClientRect();
    var x = ((e.clientX - rect.left) * session.width) / rect.width;
    var y = ((e.clientY - rect.top) * session.height) / rect.height;
    return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  }

  function onPointerDown(e) {
    if (!session || !session.width || session.drawing) return;
    if (e.pointerType === "mouse" && e.button !== 0) return;
    e.preventDefault();
    try {
      $("paint-canvas").setPointerCapture(e.pointerId);
    } catch (err) {
      /* a pointer the browser does not track (a synthetic one): drawing still works */
    }
    var op = { tool: session.tool, size: Number($("paint-size").value), points: [imagePoint(e)] };
    session.ops.push(op);
    session.drawing = { op: op, pointerId: e.pointerId };
    message("");
    drawOp($("paint-canvas").getContext("2d"), op, session.scale, false, 0);
    updateUndo();
  }

  function onPointerMove(e) {
    moveCursor(e);
    var d = session && session.drawing;
    if (!d || d.pointerId !== e.pointerId) return;
    e.preventDefault();
    var events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    if (!events.length) events = [e];
    var from = d.op.points.length - 1;
    events.forEach(function (ev) {
      d.op.points.push(imagePoint(ev));
    });
    drawOp($("paint-canvas").getContext("2d"), d.op, session.scale, false, from);
  }

  function onPointerUp(e) {
    var d = session && session.drawing;
    if (!d || d.pointerId !== e.pointerId) return;
    session.drawing = null;
    updateUndo();
  }

  /** The ring that shows the brush's size under the pointer. */
  function moveCursor(e) {
    var ring = $("paint-cursor");
    if (!session || !session.width || e.pointerType === "touch") {
      ring.hidden = true;
      return;
    }
    var rect = $("paint-canvas").getBoundingClientRect();
    var d = (Number($("paint-size").value) * rect.width) / session.width;
    ring.style.width = ring.style.height = d + "px";
    ring.style.left = e.clientX - rect.left - d / 2 + "px";
    ring.style.top = e.clientY - rect.top - d / 2 + "px";
    ring.classList.toggle("eraser", session.tool === "eraser");
    ring.hidden = false;
  }

  function undo() {
    if (!session || session.drawing || !session.ops.length) return;
    session.ops.pop();
    redraw();
  }

  function clearAll() {
    if (!session || !painted()) return;
    session.ops.push({ tool: "clear" });
    redraw();
  }

  function setTool(tool) {
    session.tool = tool;
    $(tool === "eraser" ? "paint-eraser" : "paint-brush").checked = true;
  }

  function resize(by) {
    var size = $("paint-size");
    var next = Math.round(Number(size.value) * by);
    if (next === Number(size.value)) next += by > 1 ? 1 : -1;
    size.value = String(Math.min(Number(size.max), Math.max(Number(size.min), next)));
    showSize();
  }

  function finish(result) {
    var s = session;
    session = null;
    $("paint-image").removeAttribute("src");
    URL.revokeObjectURL(s.url);
    $("paint-cursor").hidden = true;
    if ($("painter").open) $("painter").close();
    s.resolve(result);
  }

  function done() {
    if (!session || !session.width || session.drawing) return;
    var s = session;
    setBusy(true);
    renderMask(s.ops, s.width, s.height, s.name).then(
      function (file) {
        if (session !== s) return;
        if (!file) {
          setBusy(false);
          message(t("paint.empty"));
          return;
        }
        finish({ file: file, ops: s.ops, size: Number($("paint-size").value) });
      },
      function (err) {
        if (session !== s) return;
        setBusy(false);
        message(err.message || String(err));
      }
    );
  }

  function setup() {
    var dialog = $("painter");
    var canvas = $("paint-canvas");
    canvas.addEventListener("pointerdown", onPointerDown);
    canvas.addEventListener("pointermove", onPointerMove);
    canvas.addEventListener("pointerup", onPointerUp);
    canvas.addEventListener("pointercancel", onPointerUp);
    canvas.addEventListener("pointerleave", function () {
      $("paint-cursor").hidden = true;
    });
    canvas.addEventListener("contextmenu", function (e) {
      e.preventDefault();
    });
    $("paint-brush").addEventListener("change", function () {
      setTool("brush");
    });
    $("paint-eraser").addEventListener("change", function () {
      setTool("eraser");
    });
    $("paint-size").addEventListener("input", showSize);
    $("paint-undo").addEventListener("click", undo);
    $("paint-clear").addEventListener("click", clearAll);
    $("paint-done").addEventListener("click", done);
    $("paint-cancel").addEventListener("click", function () {
      if (session) finish(null);
    });
    // Escape: the dialog's own cancel, which then closes it without a mask.
    dialog.addEventListener("cancel", function (e) {
      e.preventDefault();
      if (session) finish(null);
    });
    // However else the dialog closes (the browser may close it by itself), nothing is added.
    dialog.addEventListener("close", function () {
      if (session) finish(null);
    });
    dialog.addEventListener("keydown", function (e) {
      if (!session || e.altKey) return;
      var key = e.key;
      if ((e.ctrlKey || e.metaKey) && (key === "z" || key === "Z") && !e.shiftKey) {
        e.preventDefault();
        undo();
        return;
      }
      if (e.ctrlKey || e.metaKey) return;
      if (key === "b" || key === "B") setTool("brush");
      else if (key === "e" || key === "E") setTool("eraser");
      else if (key === "[") resize(1 / 1.25);
      else if (key === "]") resize(1.25);
      else return;
      e.preventDefault();
    });
    window.addEventListener("resize", layout);
    window.I18N.onChange(function () {
      if (!session) return;
      $("painter-title").textContent = t("paint.title", { name: session.name });
      showSize();
    });
  }

  setup();

  window.MaskPaint = { open: open, stemOf: stemOf };
})();
