/* retouch web page: choose photos and videos, start a batch, follow it, compare, play,
 * download, regenerate.
 *
 * Plain JavaScript over the REST API (/api/...). No build step and no network beyond the
 * page's own server. Every string shown goes through I18N.t (i18n.js).
 */
(function () {
  "use strict";

  var t = window.I18N.t;
  var POLL_MS = 700;
  // The server's lists (retouch.lib.sources IMAGE_EXTENSIONS, VIDEO_EXTENSIONS).
  var IMAGE_EXT = ["jpg", "jpeg", "jpe", "png", "webp", "tif", "tiff", "bmp", "gif"];
  var VIDEO_EXT = ["mp4", "mov", "mkv", "webm", "avi"];
  var FINAL_STATES = { done: true, failed: true, cancelled: true };
  var FINAL_STATUS = { done: true, failed: true };

  var token = new URLSearchParams(window.location.search).get("token");

  var state = {
    presets: [],
    files: [], // [{file, path}]
    notes: { refused: [], ignored: [] },
    masks: [], // the mask files sent: picked ones and painted ones
    painted: {}, // stem -> {file (the mask), ops (its strokes), source: {file, path}}
    form: null, // parameter form of the new batch
    regenForm: null,
    regenPreset: null,
    batch: null,
    cards: {}, // name -> {el, parts..., gen, regen, status}
    selected: {}, // name -> true
    pollTimer: null,
    pollFailures: 0,
    compareIndex: -1,
    busy: false,
    styles: null, // what GET /api/styles lists (null until loaded)
    styleChecked: {}, // style name -> ticked
    styleFile: null, // the photo picked for a style comparison
    styleRun: null, // {count, started, seconds (null while it runs)}
    styleResult: null,
    styleBusy: false
  };

  function $(id) {
    return document.getElementById(id);
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === null || value === undefined || value === false) return;
        if (key === "text") node.textContent = value;
        else if (key === "className") node.className = value;
        else if (key.slice(0, 2) === "on") node.addEventListener(key.slice(2), value);
        else node.setAttribute(key, value === true ? "" : value);
      });
    }
    (children || []).forEach(function (child) {
      if (child) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function message(node, text) {
    node.textContent = text || "";
    show(node, !!text);
  }

  // -- talking to the server ----------------------------------------------------------------

  /** A URL for <img>/<a>: the token goes in the query string (headers cannot be set there). */
  function withToken(url, extra) {
    if (!url) return url;
    var params = [];
    if (token) params.push("token=" + encodeURIComponent(token));
    if (extra) params.push(extra);
    if (!params.length) return url;
    return url + (url.indexOf("?") >= 0 ? "&" : "?") + params.join("&");
  }

  /** The server's {"detail": ...} as one readable line (FastAPI validation errors are lists). */
  function detailText(body, fallback) {
    var detail = body && body.detail !== undefined ? body.detail : body;
    if (Array.isArray(detail)) {
      return detail
        .map(function (d) {
          if (d && typeof d === "object") {
            var where = Array.isArray(d.loc) ? d.loc.join(".") + ": " : "";
            return where + (d.msg || JSON.stringify(d));
          }
          return String(d);
        })
        .join("; ");
    }
    if (detail && typeof detail === "object") return JSON.stringify(detail);
    if (detail === undefined || detail === null || detail === "") return fallback || "";
    return String(detail);
  }

  function HttpError(status, detail) {
    this.status = status;
    this.detail = detail;
    this.message =
      status === 401 ? t("error.auth") : t("error.http", { status: status, detail: detail });
  }

  function parseBody(text) {
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch (e) {
      return text;
    }
  }

  function api(method, path, body) {
    var headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    var init = { method: method, headers: headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(
      function (response) {
        return response.text().then(function (text) {
          var data = parseBody(text);
          if (!response.ok) {
            throw new HttpError(response.status, detailText(data, response.statusText));
          }
          return data;
        });
      },
      function (err) {
        throw new Error(t("error.network", { reason: err.message || String(err) }));
      }
    );
  }

  /** Multipart upload with progress (fetch cannot report upload progress). */
  function upload(path, formData, onProgress) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open("POST", path);
      xhr.setRequestHeader("Accept", "application/json");
      if (token) xhr.setRequestHeader("Authorization", "Bearer " + token);
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) onProgress(Math.round((100 * e.loaded) / e.total));
      });
      xhr.addEventListener("load", function () {
        var data = parseBody(xhr.responseText);
        if (xhr.status >= 200 && xhr.status < 300) resolve(data);
        else reject(new HttpError(xhr.status, detailText(data, xhr.statusText)));
      });
      xhr.addEventListener("error", function () {
        reject(new Error(t("error.upload")));
      });
      xhr.send(formData);
    });
  }

  // -- small formatting helpers -------------------------------------------------------------

  function formatSize(bytes) {
    var lang = window.I18N.lang();
    function n(x, digits) {
      return x.toLocaleString(lang, { maximumFractionDigits: digits });
    }
    if (bytes < 1024) return t("size.b", { n: n(bytes, 0) });
    if (bytes < 1024 * 1024) return t("size.kb", { n: n(bytes / 1024, 1) });
    if (bytes < 1024 * 1024 * 1024) return t("size.mb", { n: n(bytes / 1048576, 1) });
    return t("size.gb", { n: n(bytes / 1073741824, 2) });
  }

  function formatTime(iso) {
    if (!iso) return "";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return iso;
    return d.toLocaleString(window.I18N.lang());
  }

  function word(prefix, value) {
    if (value === null || value === undefined || value === "") return "";
    var key = prefix + "." + value;
    var text = t(key);
    return text === key ? String(value) : text;
  }

  function extension(name) {
    var base = name.split("/").pop();
    var dot = base.lastIndexOf(".");
    return dot > 0 ? base.slice(dot + 1).toLowerCase() : "";
  }

  function isVideoPath(path) {
    return VIDEO_EXT.indexOf(extension(path)) >= 0;
  }

  function isHidden(path) {
    return path.split("/").some(function (part) {
      return part.charAt(0) === "." || part === "__MACOSX" || part.toLowerCase() === "thumbs.db";
    });
  }

  function formatDuration(seconds) {
    var s = Math.max(1, Math.round(seconds));
    if (s < 60) return t("duration.s", { s: s });
    if (s < 3600) return t("duration.m", { m: Math.floor(s / 60), s: s % 60 });
    return t("duration.h", { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
  }

  function formatScore(score) {
    return typeof score === "number" ? score.toFixed(1) : "";
  }

  // -- choosing files -----------------------------------------------------------------------

  function addFiles(items) {
    items.forEach(function (item) {
      var path = (item.path || item.file.name).replace(/^\/+/, "");
      if (isHidden(path)) {
        state.notes.ignored.push(path);
        return;
      }
      var typeOk = item.file.type ? item.file.type.indexOf("image/") === 0 : false;
      if (IMAGE_EXT.indexOf(extension(path)) < 0 && !isVideoPath(path) && !typeOk) {
        state.notes.refused.push(path);
        return;
      }
      state.files = state.files.filter(function (f) {
        return f.path !== path;
      });
      state.files.push({ file: item.file, path: path });
    });
    message($("form-error"), "");
    renderChosen();
  }

  function renderChosen() {
    var total = state.files.reduce(function (sum, f) {
      return sum + f.file.size;
    }, 0);
    var count = state.files.length;
    var videos = state.files.filter(function (f) {
      return isVideoPath(f.path);
    }).length;
    var summaryKey = videos ? "files.summary.videos" : count === 1 ? "files.summary.one" : "files.summary";
    $("chosen-summary").textContent = count
      ? t(summaryKey, { count: count, videos: videos, size: formatSize(total) })
      : t("files.none");
    show($("clear-files"), count > 0);
    var list = $("chosen-list");
    list.textContent = "";
    var shown = state.files.slice(0, 40);
    shown.forEach(function (f) {
      list.appendChild(
        el("li", null, [
          el("span", { className: "name", text: f.path, title: f.path }),
          el("span", { className: "muted", text: formatSize(f.file.size) }),
          el("button", {
            type: "button",
            className: "icon",
            text: "×",
            "aria-label": t("files.remove", { name: f.path }),
            title: t("files.remove", { name: f.path }),
            onclick: function () {
              state.files = state.files.filter(function (g) {
                return g !== f;
              });
              renderChosen();
            }
          })
        ])
      );
    });
    if (count > shown.length) {
      list.appendChild(el("li", { className: "muted", text: t("files.more", { count: count - shown.length }) }));
    }
    var notes = [];
    if (state.notes.refused.length) {
      notes.push(t("files.refused", { names: state.notes.refused.slice(0, 10).join(", ") }));
    }
    if (state.notes.ignored.length) {
      notes.push(t("files.ignored", { names: state.notes.ignored.slice(0, 10).join(", ") }));
    }
    message($("chosen-notes"), notes.join(" "));
    renderMasks();
    renderStylePhoto();
  }

  /** Mark the chosen files that the server's refusal names (it names the file first). */
  function markRefused(detail) {
    var items = $("chosen-list").querySelectorAll("li");
    state.files.slice(0, items.length).forEach(function (f, i) {
      var named = detail.indexOf(f.path + ":") === 0 || detail.indexOf(" " + f.path + ":") >= 0;
      items[i].classList.toggle("refused", named);
    });
  }

  function fromInput(input) {
    var items = Array.prototype.map.call(input.files, function (file) {
      return { file: file, path: file.webkitRelativePath || file.name };
    });
    state.notes = { refused: [], ignored: [] };
    addFiles(items);
    input.value = "";
  }

  /** Every file under a dropped entry, with its path relative to the drop. */
  function walkEntry(entry) {
    if (!entry) return Promise.resolve([]);
    if (entry.isFile) {
      return new Promise(function (resolve) {
        entry.file(
          function (file) {
            resolve([{ file: file, path: entry.fullPath.replace(/^\/+/, "") }]);
          },
          function () {
            resolve([]);
          }
        );
      });
    }
    if (entry.isDirectory) {
      var reader = entry.createReader();
      var all = [];
      // readEntries returns at most 100 entries per call: read until it returns none.
      return new Promise(function (resolve) {
        function next() {
          reader.readEntries(
            function (batch) {
              if (!batch.length) {
                Promise.all(all.map(walkEntry)).then(function (lists) {
                  resolve([].concat.apply([], lists));
                });
                return;
              }
              all = all.concat(Array.prototype.slice.call(batch));
              next();
            },
            function () {
              resolve([]);
            }
          );
        }
        next();
      });
    }
    return Promise.resolve([]);
  }

  function onDrop(event) {
    event.preventDefault();
    $("drop").classList.remove("over");
    var dt = event.dataTransfer;
    if (!dt) return;
    var entries = [];
    var loose = [];
    if (dt.items && dt.items.length) {
      Array.prototype.forEach.call(dt.items, function (item) {
        if (item.kind !== "file") return;
        var entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
        if (entry) entries.push(entry);
        else {
          var file = item.getAsFile();
          if (file) loose.push({ file: file, path: file.name });
        }
      });
    } else if (dt.files) {
      Array.prototype.forEach.call(dt.files, function (file) {
        loose.push({ file: file, path: file.name });
      });
    }
    state.notes = { refused: [], ignored: [] };
    if (!entries.length) {
      addFiles(loose);
      return;
    }
    $("chosen-summary").textContent = t("files.reading");
    Promise.all(entries.map(walkEntry)).then(function (lists) {
      addFiles(loose.concat([].concat.apply([], lists)));
    });
  }

  function setupDrop() {
    var zone = $("drop");
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (e) {
        e.preventDefault();
        if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
        zone.classList.add("over");
      });
    });
    zone.addEventListener("dragleave", function (e) {
      if (!zone.contains(e.relatedTarget)) zone.classList.remove("over");
    });
    zone.addEventListener("drop", onDrop);
    // A drop that misses the zone must not make the browser navigate away to the file.
    window.addEventListener("dragover", function (e) {
      e.preventDefault();
    });
    window.addEventListener("drop", function (e) {
      if (!zone.contains(e.target)) e.preventDefault();
    });
    zone.addEventListener("keydown", function (e) {
      if (e.target === zone && (e.key === "Enter" || e.key === " ")) {
        e.preventDefault();
        $("files").click();
      }
    });
    $("pick-files").addEventListener("click", function () {
      $("files").click();
    });
    $("pick-folder").addEventListener("click", function () {
      $("folder").click();
    });
    $("files").addEventListener("change", function () {
      fromInput($("files"));
    });
    $("folder").addEventListener("change", function () {
      fromInput($("folder"));
    });
    $("clear-files").addEventListener("click", function () {
      state.files = [];
      state.notes = { refused: [], ignored: [] };
      renderChosen();
    });
    $("pick-masks").addEventListener("click", function () {
      $("masks").click();
    });
    $("masks").addEventListener("change", function () {
      // A new pick replaces the earlier picks and any painted mask of the same stem.
      var picked = Array.prototype.slice.call($("masks").files);
      var stems = {};
      picked.forEach(function (m) {
        stems[window.MaskPaint.stemOf(m.name)] = true;
      });
      Object.keys(state.painted).forEach(function (stem) {
        if (stems[stem]) delete state.painted[stem];
      });
      state.masks = picked.concat(
        Object.keys(state.painted).map(function (stem) {
          return state.painted[stem].file;
        })
      );
      $("masks").value = "";
      message($("paint-note"), "");
      renderMasks();
    });
    $("paint-open").addEventListener("click", function () {
      var path = $("paint-target").value;
      var f = state.files.filter(function (g) {
        return g.path === path;
      })[0];
      if (f) paintMask(f);
    });
  }

  function renderMasks() {
    $("masks-summary").textContent = state.masks.length
      ? t("masks.count", { count: state.masks.length })
      : t("masks.none");
    var target = $("paint-target");
    var chosen = target.value;
    target.textContent = "";
    // Masks are painted on photos only (a video has no single picture to paint on).
    var photos = state.files.filter(function (f) {
      return !isVideoPath(f.path);
    });
    photos.forEach(function (f) {
      var stem = window.MaskPaint.stemOf(f.path);
      var label = state.painted[stem] ? t("masks.paint.option.painted", { name: f.path }) : f.path;
      target.appendChild(el("option", { value: f.path, text: label, selected: f.path === chosen }));
    });
    show($("paint-row"), photos.length > 0);
    show($("paint-nofiles"), !photos.length);
    var list = $("painted-list");
    list.textContent = "";
    Object.keys(state.painted)
      .sort()
      .forEach(function (stem) {
        var entry = state.painted[stem];
        var name = entry.source.path;
        list.appendChild(
          el("li", { "data-stem": stem }, [
            el("span", { className: "name", text: name }),
            el("span", { className: "muted", text: t("masks.painted", { mask: entry.file.name }) }),
            el("button", {
              type: "button",
              className: "small",
              text: t("masks.paint.edit"),
              "aria-label": t("masks.paint.edit.label", { name: name }),
              onclick: function () {
                paintMask(entry.source);
              }
            }),
            el("button", {
              type: "button",
              className: "small",
              text: t("masks.paint.remove"),
              "aria-label": t("masks.paint.remove.label", { name: name }),
              onclick: function () {
                removeMask(stem);
                delete state.painted[stem];
                message($("paint-note"), "");
                renderMasks();
              }
            })
          ])
        );
      });
  }

  /** Drop the mask (picked or painted) whose file stem is ``stem`` from the ones sent. */
  function removeMask(stem) {
    state.masks = state.masks.filter(function (m) {
      return window.MaskPaint.stemOf(m.name) !== stem;
    });
  }

  /** Open the painter on one chosen photo; its painting replaces that photo's mask. */
  function paintMask(source) {
    var stem = window.MaskPaint.stemOf(source.path);
    var earlier = state.painted[stem];
    message($("paint-note"), "");
    window.MaskPaint.open({
      file: source.file,
      name: source.path,
      ops: earlier && earlier.source.path === source.path ? earlier.ops : null
    }).then(function (result) {
      if (!result) return; // cancelled: whatever was there stays
      removeMask(stem);
      state.masks.push(result.file);
      state.painted[stem] = { file: result.file, ops: result.ops, source: source };
      message($("paint-note"), t("masks.paint.added", { name: source.path, mask: result.file.name }));
      renderMasks();
      $("paint-open").focus();
    });
  }

  // -- the parameter form, generated from each step's JSON schema ---------------------------

  /** The schema of a value without its "or null" branch, and whether null is allowed. */
  function resolveSchema(schema) {
    if (schema && Array.isArray(schema.anyOf)) {
      var rest = schema.anyOf.filter(function (s) {
        return s.type !== "null";
      });
      var nullable = rest.length < schema.anyOf.length;
      var base = rest.length === 1 ? rest[0] : { type: "string" };
      var merged = {};
      Object.keys(schema).forEach(function (k) {
        if (k !== "anyOf") merged[k] = schema[k];
      });
      Object.keys(base).forEach(function (k) {
        merged[k] = base[k];
      });
      merged.nullable = nullable;
      return merged;
    }
    var copy = {};
    Object.keys(schema || {}).forEach(function (k) {
      copy[k] = schema[k];
    });
    if (Array.isArray(copy.type)) {
      copy.nullable = copy.type.indexOf("null") >= 0;
      copy.type = copy.type.filter(function (x) {
        return x !== "null";
      })[0];
    }
    return copy;
  }

  function decimals(x) {
    var s = String(x);
    var i = s.indexOf(".");
    return i < 0 ? 0 : s.length - i - 1;
  }

  /** A step for number inputs that the starting value fits (else "any", never invalid). */
  function numberStep(schema, value) {
    if (schema.multipleOf) return String(schema.multipleOf);
    if (schema.type === "integer") return "1";
    var lo = typeof schema.minimum === "number" ? schema.minimum : null;
    var hi = typeof schema.maximum === "number" ? schema.maximum : null;
    var step = hi !== null && lo !== null ? (hi - lo <= 1 ? 0.05 : hi - lo <= 10 ? 0.1 : 1) : 0.1;
    var base = lo !== null ? lo : 0;
    if (typeof value === "number") {
      var scale = Math.pow(10, Math.max(decimals(step), decimals(value), decimals(base)));
      var units = Math.round((value - base) * scale);
      if (units % Math.round(step * scale) !== 0) return "any";
    }
    return String(step);
  }

  function same(a, b) {
    return JSON.stringify(a === undefined ? null : a) === JSON.stringify(b === undefined ? null : b);
  }

  /**
   * Build the form for a preset's steps into container. initial: {"step.param": value}
   * applied over the preset's values (a batch's overrides when regenerating).
   * Returns {overrides(): {...} changed values, or throws a list of messages; reset()}.
   */
  function buildParamForm(container, preset, initial, idPrefix, onChange) {
    container.textContent = "";
    var fields = [];
    var relabels = [];
    var seen = {};
    (preset ? preset.steps : []).forEach(function (step, i) {
      seen[step.op] = (seen[step.op] || 0) + 1;
      var target = seen[step.op] > 1 ? step.op + "#" + seen[step.op] : step.op;
      var legend = el("legend", { text: t("params.step", { n: i + 1, op: step.op }) });
      relabels.push(function () {
        legend.textContent = t("params.step", { n: i + 1, op: step.op });
      });
      var box = el("fieldset", { className: "step" }, [legend]);
      var props = (step.schema && step.schema.properties) || {};
      // Parameters that name files on the server are not set from the web page.
      var names = Object.keys(props).filter(function (name) {
        return !props[name]["x-server-only"];
      });
      if (!names.length) box.appendChild(el("p", { className: "muted", text: t("params.none") }));
      var grid = el("div", { className: "grid" });
      box.appendChild(grid);
      var advanced = null;
      var advancedGrid = null;
      names.forEach(function (name) {
        var schema = resolveSchema(props[name]);
        var key = target + "." + name;
        var presetValue =
          step.params && Object.prototype.hasOwnProperty.call(step.params, name)
            ? step.params[name]
            : schema.default === undefined
              ? null
              : schema.default;
        var start =
          initial && Object.prototype.hasOwnProperty.call(initial, key) ? initial[key] : presetValue;
        var field = makeField(idPrefix + "-" + i + "-" + name, key, name, schema, start);
        field.start = start;
        fields.push(field);
        if (props[name]["x-advanced"]) {
          // Expert settings (tiling, precision...) wait in a fold of their step.
          if (!advanced) {
            var summary = el("summary", { text: t("params.advanced") });
            advancedGrid = el("div", { className: "grid" });
            advanced = el("details", { className: "advanced" }, [summary, advancedGrid]);
            box.appendChild(advanced);
            relabels.push(function () {
              summary.textContent = t("params.advanced");
            });
          }
          advancedGrid.appendChild(field.wrap);
        } else {
          grid.appendChild(field.wrap);
        }
        field.input.addEventListener("input", function () {
          field.wrap.classList.toggle("changed", field.changed());
          if (onChange) onChange();
        });
        field.input.addEventListener("change", function () {
          field.wrap.classList.toggle("changed", field.changed());
          if (onChange) onChange();
        });
      });
      container.appendChild(box);
    });

    return {
      overrides: function () {
        var out = {};
        var errors = [];
        fields.forEach(function (f) {
          var v = f.read();
          f.wrap.classList.toggle("invalid", !!v.error);
          if (v.error) errors.push(v.error);
          else if (!same(v.value, f.start)) out[f.key] = v.value;
        });
        if (errors.length) throw errors;
        return out;
      },
      changedCount: function () {
        return fields.filter(function (f) {
          return f.changed();
        }).length;
      },
      relabel: function () {
        relabels.forEach(function (fn) {
          fn();
        });
        fields.forEach(function (f) {
          if (f.relabel) f.relabel();
        });
      },
      reset: function () {
        fields.forEach(function (f) {
          f.write(f.start);
          f.wrap.classList.remove("changed", "invalid");
        });
        if (onChange) onChange();
      }
    };
  }

  function optionText(opt) {
    if (opt === null) return t("params.default") + " " + t("params.empty");
    if (opt === true) return t("params.on");
    if (opt === false) return t("params.off");
    return String(opt);
  }

  function makeField(id, key, name, schema, start) {
    var label = el("label", { for: id, text: name });
    var tx = window.I18N.tx;
    var hint = schema.description ? el("small", { className: "muted", text: tx(schema.description) }) : null;
    var input;
    var read;
    var write;
    var field = { key: key };
    var type = schema.type;

    if (Array.isArray(schema.enum) || (type === "boolean" && schema.nullable)) {
      var options = Array.isArray(schema.enum) ? schema.enum.slice() : [true, false];
      if (schema.nullable) options.unshift(null);
      input = el(
        "select",
        { id: id },
        options.map(function (opt, i) {
          return el("option", { value: String(i), text: optionText(opt) });
        })
      );
      field.relabel = function () {
        Array.prototype.forEach.call(input.options, function (o, i) {
          o.textContent = optionText(options[i]);
        });
      };
      read = function () {
        return { value: options[Number(input.value)] };
      };
      write = function (v) {
        var i = options.findIndex(function (o) {
          return same(o, v);
        });
        input.value = String(i < 0 ? 0 : i);
      };
    } else if (type === "boolean") {
      input = el("input", { id: id, type: "checkbox" });
      read = function () {
        return { value: input.checked };
      };
      write = function (v) {
        input.checked = !!v;
      };
      field.inline = true;
    } else if (type === "number" || type === "integer") {
      input = el("input", {
        id: id,
        type: "number",
        inputmode: type === "integer" ? "numeric" : "decimal",
        min: typeof schema.minimum === "number" ? schema.minimum : null,
        max: typeof schema.maximum === "number" ? schema.maximum : null,
        step: numberStep(schema, start),
        placeholder: schema.nullable ? t("params.empty") : null
      });
      read = function () {
        var raw = input.value.trim();
        if (raw === "") {
          if (schema.nullable) return { value: null };
          return { error: t("params.bad.number", { field: key }) };
        }
        var num = Number(raw);
        if (!isFinite(num) || input.validity.badInput) {
          return { error: t("params.bad.number", { field: key }) };
        }
        if (type === "integer" && Math.floor(num) !== num) {
          return { error: t("params.bad.integer", { field: key }) };
        }
        if (typeof schema.minimum === "number" && num < schema.minimum) {
          return { error: t("params.bad.min", { field: key, min: schema.minimum }) };
        }
        if (typeof schema.maximum === "number" && num > schema.maximum) {
          return { error: t("params.bad.max", { field: key, max: schema.maximum }) };
        }
        return { value: num };
      };
      write = function (v) {
        input.value = v === null || v === undefined ? "" : String(v);
      };
    } else if (type === "array" || type === "object") {
      input = el("input", { id: id, type: "text", placeholder: schema.nullable ? t("params.empty") : null });
      read = function () {
        var raw = input.value.trim();
        if (raw === "") return schema.nullable ? { value: null } : { error: t("params.bad.json", { field: key }) };
        try {
          return { value: JSON.parse(raw) };
        } catch (e) {
          return { error: t("params.bad.json", { field: key }) };
        }
      };
      write = function (v) {
        input.value = v === null || v === undefined ? "" : JSON.stringify(v);
      };
    } else {
      input = el("input", {
        id: id,
        type: "text",
        pattern: schema.pattern || null,
        placeholder: schema.nullable ? t("params.empty") : null
      });
      read = function () {
        var raw = input.value;
        if (raw === "" && schema.nullable) return { value: null };
        if (schema.pattern && !new RegExp(schema.pattern).test(raw)) {
          return { error: t("params.bad.pattern", { field: key }) };
        }
        return { value: raw };
      };
      write = function (v) {
        input.value = v === null || v === undefined ? "" : String(v);
      };
    }
    if (schema.nullable && input.tagName === "INPUT" && input.type !== "checkbox") {
      field.relabel = function () {
        input.setAttribute("placeholder", t("params.empty"));
      };
    }
    if (schema.description) input.setAttribute("title", tx(schema.description));
    var ownRelabel = field.relabel;
    field.relabel = function () {
      if (ownRelabel) ownRelabel();
      if (hint) hint.textContent = tx(schema.description);
      if (schema.description) input.setAttribute("title", tx(schema.description));
    };
    input.setAttribute("data-key", key);
    write(start);
    field.input = input;
    field.read = read;
    field.write = write;
    field.changed = function () {
      var v = read();
      return !!v.error || !same(v.value, field.start);
    };
    field.wrap = el("div", { className: "field" + (field.inline ? " inline" : "") }, field.inline ? [input, label, hint] : [label, input, hint]);
    return field;
  }

  // -- presets ------------------------------------------------------------------------------

  function presetByName(name) {
    return state.presets.filter(function (p) {
      return p.name === name;
    })[0];
  }

  function hasInpaint(preset) {
    return !!(preset && preset.steps.some(function (s) {
      return s.op === "inpaint";
    }));
  }

  function runnable(preset) {
    return !!preset && preset.available !== false;
  }

  /** Why a preset cannot run here, in the page's language (from the server's facts). */
  function unavailableText(preset) {
    var lost = (preset.weights || []).filter(function (w) {
      return !w.source;
    });
    if (!lost.length) return preset.unavailable || "";
    var path = lost[0].path || "";
    return t("preset.unavailable.weights", {
      files: lost
        .map(function (w) {
          return w.filename + " (" + w.name + ")";
        })
        .join(", "),
      dir: path.slice(0, path.lastIndexOf("/") + 1),
      models: lost
        .map(function (w) {
          return w.name;
        })
        .join(" ")
    });
  }

  function renderPresetOptions() {
    var select = $("preset");
    var chosen = select.value;
    select.textContent = "";
    state.presets.forEach(function (p) {
      var ok = runnable(p);
      select.appendChild(
        el("option", {
          value: p.name,
          text: ok ? p.name : t("preset.unavailable.option", { name: p.name }),
          disabled: !ok,
          title: ok ? null : unavailableText(p)
        })
      );
    });
    var first = state.presets.filter(runnable)[0];
    if (runnable(presetByName(chosen))) select.value = chosen;
    else if (runnable(presetByName("quick"))) select.value = "quick";
    else if (first) select.value = first.name;
  }

  /** The chosen preset's description, the weights it would fetch, the presets that
   * cannot run here and why (relabelled with the language, without rebuilding forms). */
  function renderPresetInfo() {
    var preset = presetByName($("preset").value);
    $("preset-description").textContent = preset ? window.I18N.tx(preset.description || "") : "";
    var fetching = ((preset && preset.weights) || []).filter(function (w) {
      return !!w.source;
    });
    message(
      $("preset-weights"),
      fetching.length
        ? t("preset.fetch", {
            files: fetching
              .map(function (w) {
                return w.filename;
              })
              .join(", ")
          })
        : ""
    );
    var list = $("preset-unavailable");
    list.textContent = "";
    var blocked = state.presets.filter(function (p) {
      return !runnable(p);
    });
    blocked.forEach(function (p) {
      list.appendChild(
        el("li", { "data-preset": p.name }, [el("strong", { text: p.name }), ": " + unavailableText(p)])
      );
    });
    show($("preset-unavailable-box"), blocked.length > 0);
    Array.prototype.forEach.call($("preset").options, function (o) {
      var p = presetByName(o.value);
      if (p && !runnable(p)) {
        o.textContent = t("preset.unavailable.option", { name: p.name });
        o.title = unavailableText(p);
      }
    });
  }

  function onPresetChange() {
    var preset = presetByName($("preset").value);
    renderPresetInfo();
    state.form = buildParamForm($("params"), preset, null, "p", updateChangedPill);
    state.exportForm = buildExportForm($("export-fields"), preset, updateChangedPill);
    updateChangedPill();
    show($("masks-box"), hasInpaint(preset));
    renderMasks();
  }

  function updateChangedPill() {
    var n = state.form ? state.form.changedCount() : 0;
    $("params-changed").textContent = t("params.changed", { count: n });
    show($("params-changed"), n > 0);
    var x = state.exportForm ? state.exportForm.changedCount() : 0;
    $("export-changed").textContent = t("params.changed", { count: x });
    show($("export-changed"), x > 0);
  }

  // -- export settings (the same overrides as `retouch run --set export.KEY=VALUE`) ---------

  var FORMATS = ["same", "jpg", "png", "webp", "tiff", "bmp"];
  var FORMAT_NAMES = { jpg: "JPEG", png: "PNG", webp: "WebP", tiff: "TIFF", bmp: "BMP" };
  var POSITIONS = [
    "top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right"
  ];
  var MARK_DEFAULTS = { position: "bottom-right", opacity: 0.4 };

  function buildExportForm(container, preset, onChange) {
    container.textContent = "";
    var ex = (preset && preset.export) || {};
    var startResize = ex.resize || null;
    var startMark = ex.watermark || null;
    var imageMark = !!(startMark && startMark.image); // set by the recipe; kept as it is
    var start = {
      format: ex.format || "jpg",
      quality: typeof ex.quality === "number" ? ex.quality : 92,
      template: ex.name_template || "{stem}.{ext}"
    };
    var relabels = [];
    var wraps = {};

    function add(name, key, input, hintKey) {
      var label = el("label", { for: input.id, text: t(key) });
      var hint = hintKey ? el("small", { className: "muted", text: t(hintKey) }) : null;
      relabels.push(function () {
        label.textContent = t(key);
        if (hint) hint.textContent = t(hintKey);
      });
      wraps[name] = el("div", { className: "field" }, [label, input, hint]);
      container.appendChild(wraps[name]);
      input.addEventListener("input", changed);
      input.addEventListener("change", changed);
      return input;
    }
    function choice(id, key, values, text) {
      var input = el(
        "select",
        { id: id, "data-key": key },
        values.map(function (v) {
          return el("option", { value: v, text: text(v) });
        })
      );
      relabels.push(function () {
        Array.prototype.forEach.call(input.options, function (o, i) {
          o.textContent = text(values[i]);
        });
      });
      return input;
    }
    function number(id, key, min, max, step) {
      return el("input", { id: id, "data-key": key, type: "number", min: min, max: max, step: step, inputmode: "decimal" });
    }

    var format = add(
      "format",
      "export.format",
      choice("x-format", "export.format", FORMATS, function (v) {
        return v === "same" ? t("export.format.same") : FORMAT_NAMES[v];
      })
    );
    var quality = add("quality", "export.quality", number("x-quality", "export.quality", 1, 100, 1));
    var template = add(
      "template",
      "export.name_template",
      el("input", { id: "x-template", "data-key": "export.name_template", type: "text", spellcheck: "false" }),
      "export.name_template.hint"
    );
    var resize = add(
      "resize",
      "export.resize",
      choice("x-resize", "export.resize", ["none", "max_side", "exact"], function (v) {
        return t("export.resize." + v);
      })
    );
    var maxSide = add("maxSide", "export.resize.max_side.label", number("x-max-side", "export.resize.max_side", 1, 100000, 1));
    var width = add("width", "export.resize.width", number("x-width", "export.resize.width", 1, 100000, 1));
    var height = add("height", "export.resize.height", number("x-height", "export.resize.height", 1, 100000, 1));
    var fit = add(
      "fit",
      "export.resize.mode",
      choice("x-fit", "export.resize.mode", ["crop", "pad"], function (v) {
        return t("export.resize.mode." + v);
      })
    );
    var markText = add(
      "mark",
      "export.watermark",
      el("input", { id: "x-mark", "data-key": "export.watermark.text", type: "text", maxlength: "200" }),
      "export.watermark.hint"
    );
    var markPos = add(
      "markPos",
      "export.watermark.position",
      choice("x-mark-pos", "export.watermark.position", POSITIONS, function (v) {
        return t("position." + v);
      })
    );
    var markOpacity = add("markOpacity", "export.watermark.opacity", number("x-mark-opacity", "export.watermark.opacity", 0, 1, 0.05));

    function write() {
      format.value = start.format;
      quality.value = String(start.quality);
      template.value = start.template;
      resize.value = !startResize ? "none" : startResize.max_side ? "max_side" : "exact";
      maxSide.value = String((startResize && startResize.max_side) || 2048);
      width.value = String((startResize && startResize.width) || 1920);
      height.value = String((startResize && startResize.height) || 1080);
      fit.value = (startResize && startResize.mode) || "crop";
      markText.value = (startMark && startMark.text) || "";
      markPos.value = (startMark && startMark.position) || MARK_DEFAULTS.position;
      markOpacity.value = String(startMark && typeof startMark.opacity === "number" ? startMark.opacity : MARK_DEFAULTS.opacity);
      sync();
    }
    function sync() {
      show(wraps.quality, ["jpg", "webp", "same"].indexOf(format.value) >= 0);
      show(wraps.maxSide, resize.value === "max_side");
      [wraps.width, wraps.height, wraps.fit].forEach(function (w) {
        show(w, resize.value === "exact");
      });
      [wraps.mark, wraps.markPos, wraps.markOpacity].forEach(function (w) {
        show(w, !imageMark);
      });
      var marked = !!markText.value.trim();
      show(wraps.markPos, marked && !imageMark);
      show(wraps.markOpacity, marked && !imageMark);
    }
    function changed() {
      sync();
      if (onChange) onChange();
    }
    function whole(input, key, min, max, errors) {
      var num = Number(input.value);
      var wrap = input.parentNode;
      var bad =
        input.value.trim() === "" || !isFinite(num) || Math.floor(num) !== num || num < min || num > max;
      wrap.classList.toggle("invalid", bad);
      if (bad) errors.push(t("params.bad.range", { field: t(key), min: min, max: max }));
      return num;
    }
    function shape(r) {
      if (!r) return null;
      if (r.max_side) return { max_side: r.max_side };
      return { width: r.width, height: r.height, mode: r.mode || "crop" };
    }
    function wanted(errors) {
      var out = { format: format.value, template: template.value.trim() };
      out.quality = whole(quality, "export.quality", 1, 100, errors);
      template.parentNode.classList.toggle("invalid", !out.template);
      if (!out.template) errors.push(t("export.bad.template"));
      if (resize.value === "max_side") {
        out.resize = { max_side: whole(maxSide, "export.resize.max_side.label", 1, 100000, errors) };
      } else if (resize.value === "exact") {
        out.resize = {
          width: whole(width, "export.resize.width", 1, 100000, errors),
          height: whole(height, "export.resize.height", 1, 100000, errors),
          mode: fit.value
        };
      } else out.resize = null;
      var text = markText.value.trim();
      var opacity = Number(markOpacity.value);
      var badOpacity = text && (markOpacity.value.trim() === "" || !isFinite(opacity) || opacity < 0 || opacity > 1);
      markOpacity.parentNode.classList.toggle("invalid", !!badOpacity);
      if (badOpacity) errors.push(t("params.bad.max", { field: t("export.watermark.opacity"), max: 1 }));
      out.mark = text ? { text: text, position: markPos.value, opacity: opacity } : null;
      return out;
    }
    function overrides() {
      var errors = [];
      var w = wanted(errors);
      if (errors.length) throw errors;
      var out = {};
      if (w.format !== start.format) out["export.format"] = w.format;
      if (w.quality !== start.quality) out["export.quality"] = w.quality;
      if (w.template !== start.template) out["export.name_template"] = w.template;
      var was = shape(startResize);
      if (!same(w.resize, was)) {
        if (!w.resize) out["export.resize"] = null;
        else if (!was) {
          Object.keys(w.resize).forEach(function (k) {
            out["export.resize." + k] = w.resize[k];
          });
        } else {
          // A different kind of resize than the preset's: the whole group, its other
          // settings (upscale, padding colour) kept.
          var group = { upscale: startResize.upscale, pad_color: startResize.pad_color };
          Object.keys(w.resize).forEach(function (k) {
            group[k] = w.resize[k];
          });
          out["export.resize"] = group;
        }
      }
      if (!imageMark) {
        var mark = startMark || null;
        if (!w.mark && mark) out["export.watermark"] = null;
        else if (w.mark) {
          var base = mark || { text: "", position: MARK_DEFAULTS.position, opacity: MARK_DEFAULTS.opacity };
          ["text", "position", "opacity"].forEach(function (k) {
            if (!same(w.mark[k], base[k])) out["export.watermark." + k] = w.mark[k];
          });
        }
      }
      return out;
    }
    write();
    return {
      overrides: overrides,
      changedCount: function () {
        try {
          return Object.keys(overrides()).length;
        } catch (errs) {
          return errs.length;
        }
      },
      relabel: function () {
        relabels.forEach(function (fn) {
          fn();
        });
      },
      reset: function () {
        container.querySelectorAll(".invalid").forEach(function (n) {
          n.classList.remove("invalid");
        });
        write();
        if (onChange) onChange();
      }
    };
  }

  function loadPresets() {
    return api("GET", "/api/presets").then(
      function (presets) {
        state.presets = presets || [];
        renderPresetOptions();
        onPresetChange();
      },
      function (err) {
        message($("global-error"), t("error.presets", { reason: err.message }));
      }
    );
  }

  // -- submitting a batch -------------------------------------------------------------------

  function errorList(err) {
    return Array.isArray(err) ? err.join("; ") : err.message || String(err);
  }

  function onSubmit(event) {
    event.preventDefault();
    if (state.busy) return;
    var errorBox = $("form-error");
    message(errorBox, "");
    if (!state.files.length) {
      message(errorBox, t("error.nofiles"));
      return;
    }
    if (!runnable(presetByName($("preset").value))) {
      message(errorBox, unavailableText(presetByName($("preset").value) || {}));
      return;
    }
    var overrides;
    try {
      overrides = state.form ? state.form.overrides() : {};
    } catch (errs) {
      $("params-box").open = true;
      message(errorBox, errorList(errs));
      return;
    }
    try {
      var exported = state.exportForm ? state.exportForm.overrides() : {};
      Object.keys(exported).forEach(function (k) {
        overrides[k] = exported[k];
      });
    } catch (errs) {
      $("export-box").open = true;
      message(errorBox, errorList(errs));
      return;
    }
    var fd = new FormData();
    // The choices first: a server may read them before the files.
    fd.append("preset", $("preset").value);
    if (Object.keys(overrides).length) fd.append("overrides", JSON.stringify(overrides));
    state.files.forEach(function (f) {
      fd.append("files", f.file, f.path);
    });
    if (hasInpaint(presetByName($("preset").value))) {
      state.masks.forEach(function (m) {
        fd.append("masks", m, m.name);
      });
    }

    state.busy = true;
    $("submit").disabled = true;
    $("submit-status").textContent = t("submit.uploading", { percent: 0 });
    upload("/api/batches", fd, function (percent) {
      $("submit-status").textContent =
        percent >= 100 ? t("submit.starting") : t("submit.uploading", { percent: percent });
    })
      .then(function (batch) {
        state.files = [];
        state.notes = { refused: [], ignored: [] };
        renderChosen();
        openBatch(batch);
        loadHistory();
      })
      .catch(function (err) {
        message(errorBox, err.message || String(err));
        markRefused(err.detail || "");
      })
      .then(function () {
        state.busy = false;
        $("submit").disabled = false;
        $("submit-status").textContent = "";
      });
  }

  // -- the live batch view ------------------------------------------------------------------

  function stopPolling() {
    if (state.pollTimer) clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }

  function schedulePoll(delay) {
    stopPolling();
    state.pollTimer = setTimeout(poll, delay);
  }

  function poll() {
    state.pollTimer = null;
    var batch = state.batch;
    if (!batch) return;
    var id = batch.id;
    api("GET", "/api/batches/" + encodeURIComponent(id)).then(
      function (fresh) {
        if (!state.batch || state.batch.id !== id) return; // another batch was opened meanwhile
        state.pollFailures = 0;
        message($("global-error"), "");
        var wasFinal = FINAL_STATES[state.batch.state];
        updateBatch(fresh);
        if (!FINAL_STATES[fresh.state]) schedulePoll(POLL_MS);
        else if (!wasFinal) loadHistory();
      },
      function (err) {
        if (!state.batch || state.batch.id !== id) return;
        if (err.status === 404) {
          message($("batch-error"), t("error.batch", { id: id, reason: err.message }));
          return;
        }
        state.pollFailures += 1;
        message($("global-error"), t("error.poll", { reason: err.message }));
        schedulePoll(Math.min(10000, POLL_MS * Math.pow(2, state.pollFailures)));
      }
    );
  }

  function openBatch(batch) {
    stopPolling();
    state.cards = {};
    state.selected = {};
    state.batch = null;
    $("cards").textContent = "";
    show($("batch"), true);
    if (window.location.hash !== "#" + batch.id) {
      history.replaceState(null, "", window.location.pathname + window.location.search + "#" + batch.id);
    }
    updateBatch(batch);
    setupRegenForm();
    if (!batch.images || !FINAL_STATES[batch.state]) schedulePoll(batch.images ? POLL_MS : 0);
    $("batch").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function openBatchById(id) {
    return api("GET", "/api/batches/" + encodeURIComponent(id)).then(openBatch, function (err) {
      message($("global-error"), t("error.batch", { id: id, reason: err.message }));
    });
  }

  function closeBatch() {
    stopPolling();
    state.batch = null;
    state.cards = {};
    state.selected = {};
    $("cards").textContent = "";
    show($("batch"), false);
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }

  function batchZipUrl(batch) {
    return batch.zip_url || "/api/batches/" + encodeURIComponent(batch.id) + "/zip";
  }

  /** Whether the batch's ZIP can be downloaded (the server says so with its zip_url). */
  function zipReady(batch) {
    if (batch.zip_url !== undefined) return !!batch.zip_url;
    return batch.state === "done" && counts(batch).done > 0;
  }

  function counts(batch) {
    var c = batch.counts || {};
    var images = batch.images || [];
    function count(fn) {
      return images.filter(fn).length;
    }
    return {
      done: c.done !== undefined ? c.done : count(function (i) { return i.status === "done"; }),
      failed: c.failed !== undefined ? c.failed : count(function (i) { return i.status === "failed"; }),
      pending: c.pending !== undefined ? c.pending : count(function (i) { return i.status === "pending"; }),
      running: c.running !== undefined ? c.running : count(function (i) { return !FINAL_STATUS[i.status] && i.status !== "pending"; })
    };
  }

  function updateBatch(batch) {
    var previous = state.batch;
    state.batch = batch;
    if (!batch.images && previous && previous.id === batch.id) batch.images = previous.images;
    var finished = !!FINAL_STATES[batch.state];

    $("batch-title").textContent = t("batch.title", { id: batch.id });
    var meta = [t("batch.preset", { preset: batch.preset || "" })];
    if (batch.created) meta.push(t("batch.created", { time: formatTime(batch.created) }));
    var ov = batch.overrides || {};
    var ovKeys = Object.keys(ov);
    if (ovKeys.length) {
      meta.push(
        t("batch.overrides", {
          list: ovKeys
            .map(function (k) {
              return k + "=" + JSON.stringify(ov[k]);
            })
            .join(", ")
        })
      );
    }
    $("batch-meta").textContent = meta.join(" · ");
    var badge = $("batch-state");
    badge.textContent = word("state", batch.state);
    badge.className = "badge state-" + batch.state;

    var c = counts(batch);
    var total = batch.total || (batch.images || []).length;
    var prog = batch.progress || null;
    // Reviewed images (their previews are ready) count before they are exported, and the
    // work under way (steps of the images being processed) shows as a paler part.
    var reviewed = prog ? Math.max(0, prog.reviewed - prog.exported) : 0;
    var pctDone = total ? (100 * c.done) / total : 0;
    var pctReviewed = total ? (100 * reviewed) / total : 0;
    var pctFailed = total ? (100 * c.failed) / total : 0;
    var pctAll = prog && !finished ? 100 * prog.fraction : pctDone + pctFailed;
    var pctWork = Math.max(0, pctAll - pctDone - pctReviewed - pctFailed);
    $("progress-done").style.width = pctDone + "%";
    $("progress-reviewed").style.width = pctReviewed + "%";
    $("progress-work").style.width = pctWork + "%";
    $("progress-failed").style.width = pctFailed + "%";
    var progress = $("progress");
    progress.setAttribute("aria-valuenow", String(Math.round(Math.max(pctAll, pctDone + pctFailed))));
    progress.classList.toggle("live", !finished);
    $("progress-text").textContent =
      prog && !finished
        ? t("batch.progress.live", { reviewed: prog.reviewed, exported: prog.exported, total: total })
        : t("batch.progress", { finished: c.done + c.failed, total: total });
    $("progress-counts").textContent = t("batch.counts", c);
    var eta = prog && !finished && typeof prog.eta_s === "number" ? prog.eta_s : null;
    message($("progress-eta"), eta === null ? "" : t("batch.eta", { time: formatDuration(eta) }));

    message($("batch-error"), batch.state === "failed" && batch.error ? t("batch.failed", { error: batch.error }) : "");
    var notice = "";
    if (batch.state === "cancelled") notice = t("batch.cancelled");
    else if (batch.state === "done" && c.failed > 0) notice = t("batch.partial", { failed: c.failed, total: total });
    message($("batch-notice"), notice);

    var skipped = batch.skipped || [];
    show($("skipped-box"), skipped.length > 0);
    var skippedList = $("skipped");
    skippedList.textContent = "";
    skipped.forEach(function (s) {
      skippedList.appendChild(el("li", null, [el("code", { text: s.name || s.uri || "" }), ": " + (s.reason || "")]));
    });

    var cancel = $("cancel");
    show(cancel, !finished);
    if (!finished && !cancel.classList.contains("pending")) cancel.disabled = false;
    if (finished) cancel.classList.remove("pending");

    var report = $("report");
    show(report, !!batch.report_url);
    if (batch.report_url) report.href = withToken(batch.report_url);
    var zip = $("zip-all");
    var ready = zipReady(batch);
    show(zip, ready);
    if (ready) zip.href = withToken(batchZipUrl(batch));

    renderCards(batch);
    updateSelection();
    if (state.compareIndex >= 0 && $("compare").open) renderCompare();
  }

  function renderCards(batch) {
    var list = $("cards");
    var images = batch.images || [];
    if (!images.length) {
      if (!list.querySelector(".empty")) {
        list.textContent = "";
        list.appendChild(el("li", { className: "empty muted" }));
      }
      list.querySelector(".empty").textContent = t("batch.empty");
      return;
    }
    var empty = list.querySelector(".empty");
    if (empty) empty.remove();
    images.forEach(function (img, i) {
      var card = state.cards[img.name];
      if (!card) {
        card = makeCard(img);
        state.cards[img.name] = card;
      }
      if (list.children[i] !== card.el) list.insertBefore(card.el, list.children[i] || null);
      fillCard(card, img);
    });
  }

  function makeCard(img) {
    var card = { gen: 0, regen: false, status: null, srcKey: null, video: null, videoKey: null };
    card.check = el("input", { type: "checkbox", className: "pick" });
    card.check.addEventListener("change", function () {
      if (card.check.checked) state.selected[card.name] = true;
      else delete state.selected[card.name];
      updateSelection();
    });
    // Lazy: a batch of thousands must not fetch every preview at once.
    card.thumb = el("img", { alt: "", loading: "lazy", decoding: "async" });
    card.thumbButton = el("button", { type: "button", className: "thumb", tabindex: "-1" }, [card.thumb]);
    card.placeholder = el("span", { className: "placeholder" });
    card.thumbButton.appendChild(card.placeholder);
    card.thumbButton.addEventListener("click", function () {
      openCompare(card.name);
    });
    card.nameEl = el("span", { className: "name" });
    card.badge = el("span", { className: "badge" });
    card.phase = el("span", { className: "muted phase" });
    card.score = el("span", { className: "score" });
    card.reused = el("span", { className: "reused" });
    card.error = el("p", { className: "error-text" });
    card.note = el("p", { className: "note muted" });
    card.compare = el("button", { type: "button", className: "small" });
    card.compare.addEventListener("click", function () {
      openCompare(card.name);
    });
    card.download = el("a", { className: "button small", download: "" });
    card.label = el("label", { className: "card-title" }, [card.check, card.nameEl]);
    card.el = el("li", { className: "card" }, [
      card.thumbButton,
      el("div", { className: "card-body" }, [
        card.label,
        el("div", { className: "row" }, [card.badge, card.phase, card.reused, card.score]),
        card.error,
        card.note,
        el("div", { className: "row actions" }, [card.compare, card.download])
      ])
    ]);
    return card;
  }

  function fillCard(card, img) {
    var prev = card.status;
    // A regenerated image comes back with the same thumbnail URLs: bump a version so the
    // browser fetches the new pictures instead of showing its cached old ones.
    if (prev && FINAL_STATUS[prev] && !FINAL_STATUS[img.status]) {
      card.gen += 1;
      card.regen = true;
    }
    if (card.regen && img.status === "done" && prev !== "done") {
      card.gen += 1;
      card.regen = false;
    }
    card.status = img.status;
    card.name = img.name;
    card.img = img;
    card.el.setAttribute("data-name", img.name);
    card.el.setAttribute("data-status", img.status);
    card.nameEl.textContent = img.name;
    card.nameEl.title = img.name;
    card.check.setAttribute("aria-label", t("card.select", { name: img.name }));
    card.check.checked = !!state.selected[img.name];
    var batch = state.batch || {};
    var stopped = !!FINAL_STATES[batch.state] && img.status === "pending";
    card.badge.textContent = stopped ? t("card.notstarted") : word("status", img.status);
    card.badge.className = "badge status-" + img.status;
    card.phase.textContent = cardPhase(img, batch.steps || []);
    card.reused.textContent = img.reused ? t("card.reused") : "";
    card.reused.title = img.reused ? t("card.reused.title") : "";
    card.reused.hidden = !img.reused;
    var score = formatScore(img.score);
    if (score && typeof img.score_before === "number") score = formatScore(img.score_before) + " → " + score;
    card.score.textContent = score
      ? t("card.score", { score: score }) + (img.verdict ? " · " + word("verdict", img.verdict) : "")
      : "";
    card.score.className = "score " + (img.verdict || "");
    message(card.error, img.status === "failed" ? img.error || word("status", "failed") : "");
    message(card.note, img.note || "");

    var thumbs = img.thumbs || {};
    // A video delivered as an image sequence shows its first frame; its frames download
    // as one ZIP (there is nothing to play).
    var seq = img.status === "done" && img.result_url ? img.sequence || null : null;
    var url = (seq && seq.first_frame_url) || thumbs.after || thumbs.before || null;
    var key = url ? url + "|" + card.gen : null;
    if (key !== card.srcKey) {
      card.srcKey = key;
      if (url) card.thumb.src = withToken(url, card.gen ? "v=" + card.gen : null);
      else card.thumb.removeAttribute("src");
    }
    var seen = seq ? t("card.firstframe") : thumbs.after ? t("compare.after") : t("compare.before");
    card.thumb.alt = url ? seen + ": " + img.name : "";
    card.thumb.hidden = !url;
    card.thumbButton.classList.toggle("before-only", !!url && !seq && !thumbs.after);
    card.placeholder.textContent = url ? "" : t("card.nopreview");
    show(card.placeholder, !url);

    var canCompare = !!(thumbs.before || thumbs.after);
    card.compare.textContent = t("card.compare");
    card.compare.setAttribute("aria-label", t("card.compare.label", { name: img.name }));
    card.compare.disabled = !canCompare;
    card.thumbButton.disabled = !canCompare;

    var result = !!img.result_url && img.status === "done";
    fillPlayer(card, img, result && img.kind === "video" && !seq);
    show(card.download, result);
    if (result) {
      card.download.href = withToken(img.result_url);
      card.download.textContent = seq ? t("card.download.frames", { count: seq.frames }) : t("card.download");
      card.download.setAttribute(
        "aria-label",
        seq
          ? t("card.download.frames.label", { name: img.name, count: seq.frames })
          : t("card.download.label", { name: img.name })
      );
    }
  }

  /** A delivered video plays on its card (in place of its preview; its poster is the
   * review's "after" frame). The player is made once per result, so polling never restarts
   * it, and it is stopped and removed when the result goes (a regeneration). */
  function fillPlayer(card, img, playable) {
    if (!playable) {
      if (card.video) {
        card.video.pause();
        card.video.removeAttribute("src");
        card.video.load();
        card.video.remove();
        card.video = null;
        card.videoKey = null;
      }
      card.thumbButton.hidden = false;
      return;
    }
    var extra = card.gen ? "v=" + card.gen : null;
    if (!card.video) {
      card.video = el("video", { className: "player", controls: true, preload: "metadata", playsinline: true });
      card.el.insertBefore(card.video, card.thumbButton);
    }
    var key = img.result_url + "|" + card.gen;
    if (card.videoKey !== key) {
      card.videoKey = key;
      var after = (img.thumbs || {}).after;
      if (after) card.video.poster = withToken(after, extra);
      else card.video.removeAttribute("poster");
      card.video.src = withToken(img.result_url, extra);
    }
    card.video.setAttribute("aria-label", t("card.video.label", { name: img.name }));
    card.thumbButton.hidden = true;
  }

  /** What a video's process phase has done: "frame 120/480 · 12.3 fps · about 29 s left"
   * (the frames of segments stored by an earlier run count as done, without a rate). */
  function framesText(frames) {
    var parts = [
      frames.total ? t("card.frames", { done: frames.done, total: frames.total }) : t("card.frames.open", { done: frames.done })
    ];
    if (frames.reused) {
      parts.push(t("card.frames.stored"));
    } else if (typeof frames.fps === "number" && frames.fps > 0) {
      parts.push(t("card.fps", { fps: frames.fps.toFixed(1) }));
      if (typeof frames.eta_s === "number" && frames.eta_s >= 0.5) {
        parts.push(t("card.frames.eta", { time: formatDuration(frames.eta_s) }));
      }
    }
    if (frames.segments > 1) parts.push(t("card.segment", { n: frames.segment, total: frames.segments }));
    return parts.join(" · ");
  }

  /** What an unfinished image is doing: its phase, and while it is processed the step it
   * is at ("process · step 3 of 4: upscale"), or for a video the frame. */
  function cardPhase(img, steps) {
    if (FINAL_STATUS[img.status]) return "";
    if (img.status === "prepared" && img.frames) {
      return t("card.phase", { phase: word("phase", "process") }) + " · " + framesText(img.frames);
    }
    if (img.status === "prepared" && img.step) {
      // Steps are reported as they finish: the image is at the next one.
      var n = steps.length ? Math.min(img.step + 1, steps.length) : img.step + 1;
      var step = steps.length
        ? t("card.step", { n: n, total: steps.length, op: steps[n - 1] })
        : t("card.step.open", { n: img.step, op: img.step_op || "" });
      return t("card.phase", { phase: word("phase", "process") }) + " · " + step;
    }
    return img.phase ? t("card.phase", { phase: word("phase", img.phase) }) : "";
  }

  function selectedNames() {
    var images = (state.batch && state.batch.images) || [];
    return images
      .filter(function (img) {
        return state.selected[img.name];
      })
      .map(function (img) {
        return img.name;
      });
  }

  function updateSelection() {
    var batch = state.batch;
    var names = selectedNames();
    var finished = batch && FINAL_STATES[batch.state];
    $("selected-count").textContent = t("batch.selected", { count: names.length });
    var zipSel = $("zip-selected");
    var exported = names.filter(function (n) {
      var card = state.cards[n];
      return card && card.img && card.img.status === "done";
    });
    zipSel.textContent = t("batch.zip.selected", { count: exported.length });
    show(zipSel, !!batch && zipReady(batch));
    zipSel.disabled = exported.length === 0;
    var regen = $("regen");
    regen.textContent = t("regen.submit", { count: names.length });
    regen.disabled = !names.length || !finished;
  }

  function downloadSelected() {
    var batch = state.batch;
    var names = selectedNames().filter(function (n) {
      var card = state.cards[n];
      return card && card.img && card.img.status === "done";
    });
    if (!batch || !names.length) return;
    // One names= per image (a name may itself hold a comma).
    var query = names
      .map(function (n) {
        return "names=" + encodeURIComponent(n);
      })
      .join("&");
    var url = withToken(batchZipUrl(batch), query);
    var a = el("a", { href: url, download: "" });
    document.body.appendChild(a);
    a.click();
    a.remove();
  }

  function cancelBatch() {
    var batch = state.batch;
    if (!batch) return;
    var button = $("cancel");
    button.disabled = true;
    button.classList.add("pending");
    button.textContent = t("batch.cancelling");
    api("POST", "/api/batches/" + encodeURIComponent(batch.id) + "/cancel").then(
      function (fresh) {
        button.textContent = t("batch.cancel");
        if (state.batch && state.batch.id === fresh.id) {
          updateBatch(fresh);
          if (!FINAL_STATES[fresh.state]) schedulePoll(POLL_MS);
          else loadHistory();
        }
      },
      function (err) {
        button.disabled = false;
        button.classList.remove("pending");
        button.textContent = t("batch.cancel");
        message($("batch-error"), err.message);
      }
    );
  }

  // -- regenerate ---------------------------------------------------------------------------

  function setupRegenForm() {
    var batch = state.batch;
    var preset = batch ? presetByName(batch.preset) : null;
    state.regenPreset = preset;
    state.regenForm = buildParamForm($("regen-params"), preset, (batch && batch.overrides) || {}, "r");
    show($("regen-box"), !!preset);
    message($("regen-error"), "");
  }

  function regenerate() {
    var batch = state.batch;
    var errorBox = $("regen-error");
    message(errorBox, "");
    if (!batch) return;
    var names = selectedNames();
    if (!names.length) {
      message(errorBox, t("regen.none"));
      return;
    }
    if (!FINAL_STATES[batch.state]) {
      message(errorBox, t("regen.busy"));
      return;
    }
    var overrides;
    try {
      overrides = state.regenForm ? state.regenForm.overrides() : {};
    } catch (errs) {
      message(errorBox, errorList(errs));
      return;
    }
    $("regen").disabled = true;
    api("POST", "/api/batches/" + encodeURIComponent(batch.id) + "/regenerate", {
      names: names,
      overrides: overrides
    }).then(
      function (fresh) {
        names.forEach(function (n) {
          var card = state.cards[n];
          if (card) {
            card.gen += 1;
            card.regen = true;
          }
        });
        if (state.batch && state.batch.id === fresh.id) {
          updateBatch(fresh);
          schedulePoll(POLL_MS);
        }
      },
      function (err) {
        message(errorBox, err.message);
        updateSelection();
      }
    );
  }

  // -- before/after comparison --------------------------------------------------------------

  function comparable() {
    var images = (state.batch && state.batch.images) || [];
    return images.filter(function (img) {
      var th = img.thumbs || {};
      return th.before || th.after;
    });
  }

  function openCompare(name) {
    var list = comparable();
    var index = list.findIndex(function (img) {
      return img.name === name;
    });
    if (index < 0) return;
    state.compareName = name;
    state.compareIndex = index;
    view.key = ""; // a fresh view: fit, previews
    setSlider(50);
    renderCompare();
    var dialog = $("compare");
    if (!dialog.open) dialog.showModal();
    fitStage();
    applyView();
    $("compare-range").focus();
  }

  function setImg(node, url, gen, alt) {
    var src = url ? withToken(url, gen ? "v=" + gen : null) : "";
    if (node.getAttribute("data-src") !== src) {
      node.setAttribute("data-src", src);
      if (src) node.src = src;
      else node.removeAttribute("src");
    }
    node.alt = alt;
    node.hidden = !src;
  }

  // The zoom and pan of the comparison. Both layers get the same transform (a scale about
  // the stage's top-left corner, then a shift); the before layer is stretched to the after
  // layer's box, so the input is shown at the result's size. `s` is the scale from "fit",
  // tx/ty the shift in CSS pixels, `pos` the slider in percent of the stage (screen space).
  // 100% is one pixel of the delivered result per CSS pixel. Full-size images are fetched
  // only when the view shows more pixels than the preview has.
  var view = {
    key: "",
    s: 1,
    tx: 0,
    ty: 0,
    pos: 50,
    previewW: 0,
    previewH: 0,
    fullW: 0,
    fullH: 0,
    full: {}, // layer -> full-size URL (before, after), where the server has one
    fullSrc: {}, // layer -> full-size URL once loaded
    fullState: "", // "", loading, done
    note: null // {key, vars, error}
  };
  var MAX_ZOOM = 8; // 800% of the result's pixels

  function resetView(key, img, th, gen) {
    var full = img.full || {};
    var both = !!(th.before && th.after);
    view.key = key;
    view.s = 1;
    view.tx = 0;
    view.ty = 0;
    view.previewW = 0;
    view.previewH = 0;
    view.fullW = (img.size && img.size.width) || 0;
    view.fullH = (img.size && img.size.height) || 0;
    view.full = {
      after: (th.after ? full.after : full.before) || null,
      before: both ? full.before || null : null
    };
    Object.keys(view.full).forEach(function (k) {
      if (view.full[k]) view.full[k] = withToken(view.full[k], gen ? "v=" + gen : null);
    });
    view.fullSrc = {};
    view.fullState = "";
    view.note = null;
    var after = $("compare-after");
    after.style.width = "";
    after.style.height = "";
  }

  function stageSize() {
    var stage = $("compare-stage");
    return { w: stage.clientWidth, h: stage.clientHeight };
  }

  /** Fix the stage at the preview's fitted size, so that swapping in the full-size image
   * (or resizing the window) never moves the layers apart. */
  function fitStage() {
    var after = $("compare-after");
    if (!view.previewW || !view.previewH || !$("compare").open) return;
    var dialog = $("compare");
    var cs = window.getComputedStyle(dialog);
    var avail = dialog.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    // The result's own proportions when known (a preview's size is rounded).
    var ratio = view.fullW && view.fullH ? view.fullH / view.fullW : view.previewH / view.previewW;
    var w = Math.floor(Math.min(view.previewW, avail, (window.innerHeight * 0.62) / ratio));
    if (w <= 0) return;
    after.style.width = w + "px";
    after.style.height = (w * ratio).toFixed(3) + "px";
  }

  function measurePreview() {
    var after = $("compare-after");
    if (after.getAttribute("data-kind") !== "preview" || !after.complete || !after.naturalWidth) return;
    if (view.previewW === after.naturalWidth && view.previewH === after.naturalHeight) return;
    view.previewW = after.naturalWidth;
    view.previewH = after.naturalHeight;
    fitStage();
    applyView();
  }

  function resultWidth() {
    return view.fullW || view.previewW;
  }

  function maxScale(w) {
    return w > 0 ? Math.max(1, (MAX_ZOOM * resultWidth()) / w) : MAX_ZOOM;
  }

  function actualScale(w) {
    return w > 0 && resultWidth() ? Math.max(1, resultWidth() / w) : 1;
  }

  function zoomPercent(w) {
    return w > 0 && resultWidth() ? (100 * view.s * w) / resultWidth() : 100 * view.s;
  }

  function applyView() {
    var stage = $("compare-stage");
    var size = stageSize();
    view.s = Math.max(1, Math.min(maxScale(size.w), view.s));
    if (view.s <= 1.0001) {
      view.s = 1;
      view.tx = 0;
      view.ty = 0;
    }
    view.tx = Math.min(0, Math.max(size.w - size.w * view.s, view.tx));
    view.ty = Math.min(0, Math.max(size.h - size.h * view.s, view.ty));
    var zoomed = view.s > 1;
    var transform = zoomed
      ? "translate(" + view.tx.toFixed(2) + "px, " + view.ty.toFixed(2) + "px) scale(" + view.s.toFixed(5) + ")"
      : "";
    $("compare-after").style.transform = transform;
    $("compare-before").style.transform = transform;
    stage.classList.toggle("zoomed", zoomed);
    stage.setAttribute("data-zoom", String(Math.round(zoomPercent(size.w))));
    setSlider(view.pos);
    updateZoomBar(size.w);
    if (zoomed && !view.fullState && view.previewW && view.s * size.w > view.previewW + 0.5) loadFull();
  }

  /** Zoom to scale `s` (from fit) keeping the point (x, y) of the stage where it is. */
  function zoomTo(s, x, y) {
    var size = stageSize();
    if (!size.w || !size.h || !view.previewW) return;
    if (x === undefined) {
      x = size.w / 2;
      y = size.h / 2;
    }
    s = Math.max(1, Math.min(maxScale(size.w), s));
    var lx = (x - view.tx) / view.s;
    var ly = (y - view.ty) / view.s;
    view.tx = x - lx * s;
    view.ty = y - ly * s;
    view.s = s;
    applyView();
  }

  function zoomBy(factor) {
    var size = stageSize();
    var s = view.s * factor;
    var actual = actualScale(size.w);
    // Stepping across 100% stops there once.
    if ((view.s < actual && s > actual) || (view.s > actual && s < actual)) s = actual;
    zoomTo(s);
  }

  function updateZoomBar(w) {
    var ready = !!view.previewW && !$("compare-slider").hidden;
    $("zoom-level").textContent = ready ? t("compare.zoom.level", { pct: Math.round(zoomPercent(w)) }) : "";
    $("zoom-out").disabled = !ready || view.s <= 1;
    $("zoom-fit").disabled = !ready || view.s <= 1;
    $("zoom-in").disabled = !ready || view.s >= maxScale(w) - 1e-6;
    $("zoom-actual").disabled = !ready || Math.abs(view.s - actualScale(w)) < 1e-6;
    show($("zoom-bar"), !$("compare-slider").hidden);
    var note = $("zoom-note");
    if (view.note) {
      note.textContent = t(view.note.key, view.note.vars);
      note.classList.toggle("error-text", !!view.note.error);
    }
    show(note, !!view.note);
  }

  function layerFor(layer) {
    return $(layer === "after" ? "compare-after" : "compare-before");
  }

  /** Fetch the full-size layers (once per photo); each replaces its preview once loaded. */
  function loadFull() {
    var key = view.key;
    var layers = Object.keys(view.full).filter(function (k) {
      return view.full[k];
    });
    if (!layers.length) return;
    view.fullState = "loading";
    view.note = { key: "compare.full.loading" };
    var left = layers.length;
    var failures = [];
    layers.forEach(function (layer) {
      var url = view.full[layer];
      var probe = new Image();
      probe.onload = function () {
        if (view.key !== key) return;
        if (layer === "after" && !view.fullW) {
          view.fullW = probe.naturalWidth;
          view.fullH = probe.naturalHeight;
        }
        view.fullSrc[layer] = url;
        var node = layerFor(layer);
        node.setAttribute("data-src", url);
        node.setAttribute("data-kind", "full");
        node.src = url;
        finish();
      };
      probe.onerror = function () {
        if (view.key !== key) return;
        fetch(url)
          .then(function (response) {
            return response.text().then(function (text) {
              return detailText(parseBody(text), "HTTP " + response.status);
            });
          })
          .then(null, function (err) {
            return String((err && err.message) || err);
          })
          .then(function (reason) {
            if (view.key !== key) return;
            failures.push(reason);
            finish();
          });
      };
      probe.src = url;
    });
    function finish() {
      left -= 1;
      if (left > 0) return;
      view.fullState = "done";
      view.note = failures.length
        ? { key: "compare.full.failed", vars: { reason: failures.join("; ") }, error: true }
        : null;
      applyView();
    }
  }

  function renderCompare() {
    var list = comparable();
    var index = list.findIndex(function (img) {
      return img.name === state.compareName;
    });
    if (index < 0) index = Math.min(state.compareIndex, list.length - 1);
    if (index < 0) {
      $("compare").close();
      return;
    }
    state.compareIndex = index;
    var img = list[index];
    state.compareName = img.name;
    var card = state.cards[img.name] || { gen: 0 };
    var th = img.thumbs || {};
    $("compare-title").textContent = t("compare.title", { name: img.name });
    var facts = [];
    if (typeof img.score === "number")
      facts.push(
        t("compare.score") + ": " +
          (typeof img.score_before === "number" ? formatScore(img.score_before) + " → " : "") +
          formatScore(img.score)
      );
    if (img.verdict) facts.push(t("compare.verdict") + ": " + word("verdict", img.verdict));
    facts.push(word("status", img.status));
    if (img.output_name) facts.push(t("compare.output") + ": " + img.output_name);
    var factsEl = $("compare-facts");
    factsEl.textContent = facts.join(" · ");
    factsEl.className = "facts " + (img.verdict || "");
    message($("compare-error"), img.status === "failed" ? img.error || "" : img.note || "");

    var both = !!(th.before && th.after);
    var key = [img.name, card.gen || 0, th.after || "", th.before || "", (img.full || {}).after || ""].join("\n");
    if (key !== view.key) resetView(key, img, th, card.gen);
    show($("compare-slider"), !!(th.before || th.after));
    var after = $("compare-after");
    var before = $("compare-before");
    if (view.fullSrc.after) {
      after.alt = t("compare.after") + ": " + img.name;
    } else {
      setImg(after, th.after || th.before, card.gen, t("compare.after") + ": " + img.name);
      after.setAttribute("data-kind", "preview");
    }
    if (view.fullSrc.before) {
      before.alt = t("compare.before") + ": " + img.name;
    } else {
      setImg(before, both ? th.before : null, card.gen, t("compare.before") + ": " + img.name);
      before.setAttribute("data-kind", "preview");
    }
    $("compare-range").disabled = !both;
    $("compare-stage").classList.toggle("single", !both);
    setImg($("crop-before"), th["crop-before"], card.gen, t("compare.crop.before"));
    setImg($("crop-after"), th["crop-after"], card.gen, t("compare.crop.after"));
    show($("crop-before").parentNode.parentNode, !!(th["crop-before"] || th["crop-after"]));
    show($("compare-missing"), !(th.before || th.after));
    $("compare-prev").disabled = index <= 0;
    $("compare-next").disabled = index >= list.length - 1;
    measurePreview();
    applyView();
  }

  function setSlider(p) {
    p = Math.max(0, Math.min(100, p));
    view.pos = p;
    var stage = $("compare-stage");
    // The before layer is clipped in its own (zoomed) coordinates, so that the split stays
    // under the slider's line on screen; unzoomed this is just the slider's position.
    var right = 100 - p;
    var w = stage.clientWidth;
    if (view.s !== 1 && w > 0) {
      right = 100 - (p - (100 * view.tx) / w) / view.s;
      right = Math.max(0, Math.min(100, right));
    }
    $("compare-before").style.clipPath = "inset(0 " + right + "% 0 0)";
    $("compare-handle").style.left = "calc(" + p + "% - 1px)";
    stage.setAttribute("data-pos", p.toFixed(1));
    var range = $("compare-range");
    if (Number(range.value) !== p) range.value = String(p);
  }

  function setupCompare() {
    var stage = $("compare-stage");
    var pointers = {}; // pointerId -> position in the stage
    var gesture = null; // {kind: slider | pan | pinch, ...}
    function local(e) {
      var r = stage.getBoundingClientRect();
      return { x: e.clientX - r.left, y: e.clientY - r.top, w: r.width };
    }
    function move(e) {
      var p = local(e);
      if (p.w > 0) setSlider((100 * p.x) / p.w);
    }
    function ids() {
      return Object.keys(pointers);
    }
    function startPan(p) {
      gesture = { kind: "pan", x: p.x, y: p.y, tx: view.tx, ty: view.ty };
      stage.classList.add("panning");
    }
    function startPinch() {
      var a = pointers[ids()[0]];
      var b = pointers[ids()[1]];
      var mx = (a.x + b.x) / 2;
      var my = (a.y + b.y) / 2;
      gesture = {
        kind: "pinch",
        dist: Math.max(1, Math.hypot(a.x - b.x, a.y - b.y)),
        lx: (mx - view.tx) / view.s,
        ly: (my - view.ty) / view.s,
        s: view.s
      };
    }
    stage.addEventListener("pointerdown", function (e) {
      if (e.pointerType === "mouse" && e.button !== 0) return;
      var p = local(e);
      pointers[e.pointerId] = p;
      if (stage.setPointerCapture) stage.setPointerCapture(e.pointerId);
      var single = stage.classList.contains("single");
      if (ids().length === 2 && view.previewW) {
        startPinch();
      } else if (ids().length > 1) {
        return;
      } else if (view.s > 1 && (single || Math.abs(p.x - (view.pos / 100) * p.w) > 12)) {
        startPan(p); // zoomed in: a drag pans, except on the slider's line
      } else if (!single) {
        gesture = { kind: "slider" };
        move(e);
      } else {
        gesture = null;
      }
    });
    stage.addEventListener("pointermove", function (e) {
      if (!(e.pointerId in pointers) || !gesture) return;
      var p = local(e);
      pointers[e.pointerId] = p;
      if (gesture.kind === "slider") {
        move(e);
      } else if (gesture.kind === "pan") {
        view.tx = gesture.tx + (p.x - gesture.x);
        view.ty = gesture.ty + (p.y - gesture.y);
        applyView();
      } else if (gesture.kind === "pinch" && ids().length >= 2) {
        var a = pointers[ids()[0]];
        var b = pointers[ids()[1]];
        var size = stageSize();
        var s = Math.max(1, Math.min(maxScale(size.w), (gesture.s * Math.hypot(a.x - b.x, a.y - b.y)) / gesture.dist));
        view.s = s;
        view.tx = (a.x + b.x) / 2 - gesture.lx * s;
        view.ty = (a.y + b.y) / 2 - gesture.ly * s;
        applyView();
      }
    });
    ["pointerup", "pointercancel"].forEach(function (type) {
      stage.addEventListener(type, function (e) {
        delete pointers[e.pointerId];
        var left = ids();
        if (gesture && gesture.kind === "pinch" && left.length === 1) {
          startPan(pointers[left[0]]);
        } else if (!left.length) {
          gesture = null;
          stage.classList.remove("panning");
        }
      });
    });
    stage.addEventListener(
      "wheel",
      function (e) {
        if (!view.previewW || $("compare-slider").hidden) return;
        e.preventDefault();
        var p = local(e);
        var unit = e.deltaMode === 1 ? 33 : e.deltaMode === 2 ? 400 : 1;
        zoomTo(view.s * Math.exp(-e.deltaY * unit * 0.002), p.x, p.y);
      },
      { passive: false }
    );
    stage.addEventListener("dblclick", function (e) {
      var p = local(e);
      if (view.s > 1) zoomTo(1);
      else zoomTo(actualScale(p.w), p.x, p.y);
    });
    $("compare-after").addEventListener("load", measurePreview);
    window.addEventListener("resize", function () {
      if (!$("compare").open) return;
      fitStage();
      applyView();
    });
    $("zoom-in").addEventListener("click", function () {
      zoomBy(1.5);
    });
    $("zoom-out").addEventListener("click", function () {
      zoomBy(1 / 1.5);
    });
    $("zoom-actual").addEventListener("click", function () {
      zoomTo(actualScale(stageSize().w));
    });
    $("zoom-fit").addEventListener("click", function () {
      zoomTo(1);
    });
    $("compare-range").addEventListener("input", function () {
      setSlider(Number($("compare-range").value));
    });
    $("compare-close").addEventListener("click", function () {
      $("compare").close();
    });
    $("compare").addEventListener("close", function () {
      state.compareIndex = -1;
      var card = state.cards[state.compareName];
      if (card) card.compare.focus();
    });
    // A click on the backdrop (outside the dialog's box) closes it.
    $("compare").addEventListener("click", function (e) {
      if (e.target !== $("compare")) return;
      var r = $("compare").getBoundingClientRect();
      if (e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom) {
        $("compare").close();
      }
    });
    function step(delta) {
      var list = comparable();
      var i = state.compareIndex + delta;
      if (i >= 0 && i < list.length) {
        state.compareName = list[i].name;
        state.compareIndex = i;
        renderCompare();
      }
    }
    $("compare-prev").addEventListener("click", function () {
      step(-1);
    });
    $("compare-next").addEventListener("click", function () {
      step(1);
    });
    $("compare").addEventListener("keydown", function (e) {
      if (!e.ctrlKey && !e.metaKey && !e.altKey && !$("compare-slider").hidden) {
        var zoom = { "+": 1.5, "=": 1.5, "-": 1 / 1.5, _: 1 / 1.5 }[e.key];
        if (zoom) zoomBy(zoom);
        else if (e.key === "0") zoomTo(1);
        else if (e.key === "1") zoomTo(actualScale(stageSize().w));
        if (zoom || e.key === "0" || e.key === "1") {
          e.preventDefault();
          return;
        }
      }
      if (e.target === $("compare-range")) return; // arrows move the slider there
      if (e.key === "ArrowLeft" || e.key === "PageUp") step(-1);
      else if (e.key === "ArrowRight" || e.key === "PageDown") step(1);
    });
  }

  // -- comparing styles ---------------------------------------------------------------------

  var MIN_STYLES = 2;
  var MAX_STYLES = 6;

  /** The photo a comparison runs on: the one picked in the section, else the first photo
   * chosen for the batch (null when there is neither). */
  function stylePhoto() {
    if (state.styleFile) return { file: state.styleFile, path: state.styleFile.name, picked: true };
    var first = state.files.filter(function (f) {
      return !isVideoPath(f.path);
    })[0];
    return first ? { file: first.file, path: first.path, picked: false } : null;
  }

  function renderStylePhoto() {
    var photo = stylePhoto();
    $("styles-photo").textContent = photo
      ? t(photo.picked ? "styles.photo" : "styles.photo.batch", { name: photo.path })
      : t("styles.photo.none");
    show($("styles-photo-clear"), !!state.styleFile);
  }

  function loadStyles() {
    return api("GET", "/api/styles").then(
      function (list) {
        state.styles = list || [];
        renderStyles();
      },
      function (err) {
        show($("styles-loading"), false);
        message($("styles-error"), t("styles.error.load", { reason: err.message }));
      }
    );
  }

  /** One group of checkboxes per kind (presets, re-drawing models); a style that cannot run
   * here is disabled, with the reason as its title. Ticks survive a rebuild. */
  function renderStyles() {
    var box = $("styles-groups");
    box.textContent = "";
    show($("styles-loading"), !state.styles);
    ["preset", "model"].forEach(function (kind) {
      var items = (state.styles || []).filter(function (s) {
        return s.kind === kind;
      });
      if (!items.length) return;
      var group = el("div", { className: "styles-group", role: "group", "aria-labelledby": "styles-group-" + kind }, [
        el("h3", { id: "styles-group-" + kind, text: t("styles.group." + kind) })
      ]);
      items.forEach(function (s) {
        var ok = s.available !== false;
        var input = el("input", {
          type: "checkbox",
          value: s.name,
          disabled: !ok,
          checked: ok && !!state.styleChecked[s.name],
          onchange: function () {
            state.styleChecked[s.name] = input.checked;
            message($("styles-error"), "");
          }
        });
        group.appendChild(
          el(
            "label",
            {
              className: "style-choice" + (ok ? "" : " unavailable"),
              "data-style": s.name,
              title: ok ? window.I18N.tx(s.description || "") : unavailableText(s)
            },
            [input, el("span", { text: ok ? s.name : t("styles.unavailable", { name: s.name }) })]
          )
        );
      });
      box.appendChild(group);
    });
  }

  function chosenStyles() {
    return Array.prototype.map.call($("styles-groups").querySelectorAll("input:checked"), function (i) {
      return i.value;
    });
  }

  function runStyles() {
    if (state.styleBusy) return;
    var errorBox = $("styles-error");
    message(errorBox, "");
    var photo = stylePhoto();
    if (!photo) {
      message(errorBox, t("styles.error.nophoto"));
      return;
    }
    var chosen = chosenStyles();
    if (chosen.length < MIN_STYLES || chosen.length > MAX_STYLES) {
      message(errorBox, t("styles.error.count", { min: MIN_STYLES, max: MAX_STYLES, count: chosen.length }));
      return;
    }
    var fd = new FormData();
    fd.append("styles", chosen.join(","));
    fd.append("max_side", $("styles-size").value);
    fd.append("file", photo.file, photo.path.split("/").pop());
    state.styleBusy = true;
    state.styleResult = null;
    state.styleRun = { count: chosen.length, started: Date.now(), seconds: null };
    $("styles-run").disabled = true;
    renderStyleResult();
    renderStyleStatus();
    var timer = setInterval(renderStyleStatus, 1000);
    upload("/api/styles/preview", fd, function () {})
      .then(function (result) {
        state.styleResult = result;
        state.styleRun.seconds = result.seconds;
        renderStyleResult();
      })
      .catch(function (err) {
        state.styleRun = null;
        message(errorBox, err.message || String(err));
      })
      .then(function () {
        clearInterval(timer);
        state.styleBusy = false;
        $("styles-run").disabled = false;
        renderStyleStatus();
      });
  }

  /** "rendering 3 styles… 12 s" while it runs, then how long the server took. */
  function renderStyleStatus() {
    var run = state.styleRun;
    var text = "";
    if (run && run.seconds !== null) {
      text = t("styles.done", { count: run.count, time: t("duration.s", { s: run.seconds.toFixed(1) }) });
    } else if (run) {
      text = t("styles.running", { count: run.count, time: formatDuration((Date.now() - run.started) / 1000) });
    }
    $("styles-status").textContent = text;
  }

  function renderStyleResult() {
    var r = state.styleResult;
    show($("styles-result"), !!r);
    var rows = $("styles-rows");
    rows.textContent = "";
    if (!r) return;
    var img = $("styles-sheet");
    if (img.getAttribute("src") !== r.sheet) img.src = r.sheet;
    img.alt = t("styles.sheet.alt", { name: r.image, styles: r.styles.join(", ") });
    r.cells.forEach(function (c) {
      var verdict = c.error
        ? el("td", { className: "error-text", text: t("styles.failed", { error: c.error }) })
        : el("td", { className: c.verdict || "", text: word("verdict", c.verdict) });
      rows.appendChild(
        el("tr", { "data-style": c.style }, [
          el("td", null, [
            el("strong", { text: c.style }),
            c.style === r.best ? el("span", { className: "badge best", text: t("styles.best") }) : null
          ]),
          el("td", { text: formatScore(c.score_before) }),
          el("td", { className: "score", text: formatScore(c.score) }),
          verdict,
          el("td", { text: t("duration.s", { s: (c.seconds || 0).toFixed(1) }) })
        ])
      );
    });
  }

  function setupStyles() {
    $("styles-pick").addEventListener("click", function () {
      $("styles-file").click();
    });
    $("styles-file").addEventListener("change", function () {
      var input = $("styles-file");
      if (input.files && input.files[0]) state.styleFile = input.files[0];
      input.value = "";
      message($("styles-error"), "");
      renderStylePhoto();
    });
    $("styles-photo-clear").addEventListener("click", function () {
      state.styleFile = null;
      renderStylePhoto();
    });
    $("styles-run").addEventListener("click", runStyles);
    renderStylePhoto();
  }

  // -- earlier batches ----------------------------------------------------------------------

  function loadHistory() {
    return api("GET", "/api/batches").then(renderHistory, function (err) {
      message($("global-error"), err.message);
    });
  }

  function renderHistory(list) {
    state.history = list || [];
    var rows = $("history-rows");
    rows.textContent = "";
    var items = state.history.slice().sort(function (a, b) {
      return String(b.created || "").localeCompare(String(a.created || ""));
    });
    show($("history-empty"), !items.length);
    show($("history-table"), items.length > 0);
    items.forEach(function (b) {
      var c = counts(b);
      rows.appendChild(
        el("tr", { "data-id": b.id }, [
          el("td", { text: formatTime(b.created) }),
          el("td", null, [el("code", { text: b.id })]),
          el("td", { text: b.preset || "" }),
          el("td", null, [el("span", { className: "badge state-" + b.state, text: word("state", b.state) })]),
          el("td", { text: t("history.images", { done: c.done, failed: c.failed, total: b.total || 0 }) }),
          el("td", null, [
            el("button", {
              type: "button",
              className: "small",
              text: t("history.open"),
              "aria-label": t("history.open.label", { id: b.id }),
              onclick: function () {
                openBatchById(b.id);
              }
            })
          ])
        ])
      );
    });
  }

  // -- language -----------------------------------------------------------------------------

  function rerender() {
    renderChosen();
    renderMasks();
    // Relabel the parameter forms in place: rebuilding them would lose the user's edits.
    if (state.form) state.form.relabel();
    if (state.regenForm) state.regenForm.relabel();
    if (state.exportForm) state.exportForm.relabel();
    if (state.presets.length) renderPresetInfo();
    updateChangedPill();
    if (state.batch) updateBatch(state.batch);
    if (state.history) renderHistory(state.history);
    if ($("compare").open) renderCompare();
    if (state.styles) renderStyles();
    renderStylePhoto();
    renderStyleStatus();
    renderStyleResult();
    $("lang").setAttribute("lang", window.I18N.lang() === "en" ? "zh-CN" : "en");
  }

  // -- start --------------------------------------------------------------------------------

  function start() {
    window.I18N.setLang(window.I18N.lang());
    $("lang").setAttribute("lang", window.I18N.lang() === "en" ? "zh-CN" : "en");
    $("lang").addEventListener("click", function () {
      window.I18N.toggle();
    });
    window.I18N.onChange(rerender);
    setupDrop();
    setupCompare();
    setupStyles();
    renderChosen();
    $("new-form").addEventListener("submit", onSubmit);
    $("preset").addEventListener("change", onPresetChange);
    $("params-reset").addEventListener("click", function () {
      if (state.form) state.form.reset();
    });
    $("export-reset").addEventListener("click", function () {
      if (state.exportForm) state.exportForm.reset();
    });
    $("regen-reset").addEventListener("click", function () {
      if (state.regenForm) state.regenForm.reset();
    });
    $("regen").addEventListener("click", regenerate);
    $("cancel").addEventListener("click", cancelBatch);
    $("zip-selected").addEventListener("click", downloadSelected);
    $("batch-close").addEventListener("click", closeBatch);
    $("history-refresh").addEventListener("click", loadHistory);
    $("select-all").addEventListener("click", function () {
      ((state.batch && state.batch.images) || []).forEach(function (img) {
        state.selected[img.name] = true;
      });
      Object.keys(state.cards).forEach(function (n) {
        state.cards[n].check.checked = true;
      });
      updateSelection();
    });
    $("select-none").addEventListener("click", function () {
      state.selected = {};
      Object.keys(state.cards).forEach(function (n) {
        state.cards[n].check.checked = false;
      });
      updateSelection();
    });
    loadPresets().then(function () {
      var id = window.location.hash.replace(/^#/, "");
      if (id) openBatchById(decodeURIComponent(id));
    });
    loadHistory();
    loadStyles();
  }

  start();
})();
