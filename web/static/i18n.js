/* retouch web page: every visible string, in English and Simplified Chinese.
 *
 * Static markup names its strings with data-i18n (text), data-i18n-title,
 * data-i18n-aria-label and data-i18n-placeholder; app.js builds the rest with I18N.t().
 * The language comes from localStorage, else navigator.language, and is kept in <html lang>.
 */
(function () {
  "use strict";

  var STORE_KEY = "retouch.lang";

  var dict = {
    en: {
      "app.title": "retouch",
      "app.subtitle": "Batch photo enhancement: drop photos, pick a preset, download the results.",
      "lang.toggle": "中文",
      "lang.toggle.label": "Switch the page to Chinese",

      "new.title": "New batch",
      "drop.title": "Drop photos or whole folders here",
      "drop.hint": "JPEG, PNG, WebP, TIFF, BMP or GIF. Folders keep their sub-folders.",
      "drop.label": "Drop zone for photos and folders",
      "pick.files": "Choose files…",
      "pick.folder": "Choose a folder…",
      "files.none": "No photos chosen yet.",
      "files.summary": "{count} photos, {size}",
      "files.summary.one": "1 photo, {size}",
      "files.clear": "Clear",
      "files.remove": "Remove {name}",
      "files.more": "… and {count} more",
      "files.refused": "Not added (not an image file): {names}",
      "files.ignored": "Ignored hidden or system files: {names}",
      "files.reading": "Reading the dropped folders…",

      "preset.label": "Preset",
      "preset.loading": "Loading presets…",
      "params.title": "Parameters",
      "params.hint": "Only the values you change are sent; the rest stay as the preset sets them.",
      "params.reset": "Reset to the preset",
      "params.changed": "{count} changed",
      "params.empty": "(empty)",
      "params.on": "on",
      "params.off": "off",
      "params.default": "default",
      "params.none": "This step has no parameters.",
      "params.step": "Step {n}: {op}",
      "params.bad.number": "{field}: enter a number",
      "params.bad.integer": "{field}: enter a whole number",
      "params.bad.min": "{field}: at least {min}",
      "params.bad.max": "{field}: at most {max}",
      "params.bad.json": "{field}: enter a JSON value, e.g. [10, 10, 100, 40]",
      "params.bad.pattern": "{field}: does not match the expected form",
      "masks.title": "Masks for inpainting",
      "masks.hint": "One mask per photo with the same file name stem (white = remove).",
      "masks.pick": "Choose masks…",
      "masks.count": "{count} masks chosen",
      "masks.none": "No masks chosen.",
      "submit": "Start batch",
      "submit.uploading": "Uploading… {percent}%",
      "submit.starting": "Starting…",
      "error.nofiles": "Choose at least one photo first.",
      "error.network": "The server could not be reached: {reason}",
      "error.upload": "The upload was interrupted: the server could not be reached.",
      "error.http": "{detail} (HTTP {status})",
      "error.presets": "Could not load the presets: {reason}",
      "error.batch": "Could not load batch {id}: {reason}",
      "error.poll": "Lost contact with the server ({reason}); retrying…",
      "error.auth": "This server needs an access token: open the page with ?token=… in its address.",

      "batch.title": "Batch {id}",
      "batch.preset": "Preset {preset}",
      "batch.overrides": "Changed parameters: {list}",
      "batch.created": "Started {time}",
      "batch.progress": "{finished} of {total} finished",
      "batch.counts": "{done} done · {running} running · {pending} waiting · {failed} failed",
      "batch.failed": "The batch failed: {error}",
      "batch.partial": "Finished: {failed} of {total} photos failed (see each card).",
      "batch.cancelled": "The batch was cancelled.",
      "batch.skipped": "Skipped files",
      "batch.cancel": "Cancel batch",
      "batch.cancelling": "Cancelling…",
      "batch.report": "Open the review report",
      "batch.zip": "Download all (ZIP)",
      "batch.zip.selected": "Download selected ({count})",
      "batch.select.all": "Select all",
      "batch.select.none": "Select none",
      "batch.selected": "{count} selected",
      "batch.close": "Close batch",
      "batch.empty": "No photos in this batch.",
      "regen.title": "Regenerate selected photos",
      "regen.hint": "Change parameters below, tick photos on their cards, then regenerate them.",
      "regen.submit": "Regenerate selected ({count})",
      "regen.none": "Tick at least one photo to regenerate.",
      "regen.busy": "Wait until the batch has finished to regenerate.",

      "card.select": "Select {name}",
      "card.compare": "Compare",
      "card.compare.label": "Compare before and after for {name}",
      "card.phase": "phase: {phase}",
      "card.score": "score {score}",
      "card.nopreview": "no preview yet",
      "card.download": "Download",
      "card.download.label": "Download the result of {name}",

      "status.pending": "waiting",
      "status.prepared": "prepared",
      "status.processed": "processed",
      "status.reviewed": "reviewed",
      "status.done": "done",
      "status.failed": "failed",
      "state.queued": "queued",
      "state.running": "running",
      "state.done": "done",
      "state.failed": "failed",
      "state.cancelled": "cancelled",
      "phase.prepare": "prepare",
      "phase.process": "process",
      "phase.review": "review",
      "phase.export": "export",
      "verdict.improved": "improved",
      "verdict.unchanged": "unchanged",
      "verdict.worse": "worse",

      "compare.title": "Before and after: {name}",
      "compare.slider": "Slider position: left shows before, right shows after",
      "compare.before": "before",
      "compare.after": "after",
      "compare.crops": "100% crops of the most detailed region",
      "compare.crop.before": "before (enlarged to the result's size)",
      "compare.crop.after": "after, 100%",
      "compare.score": "Score",
      "compare.verdict": "Verdict",
      "compare.output": "File in the ZIP",
      "compare.nothumbs": "No preview for this photo yet.",
      "compare.prev": "Previous photo",
      "compare.next": "Next photo",
      "compare.close": "Close",

      "history.title": "Earlier batches",
      "history.refresh": "Refresh",
      "history.none": "No batches yet.",
      "history.open": "Open",
      "history.open.label": "Open batch {id}",
      "history.col.created": "Started",
      "history.col.id": "Batch",
      "history.col.preset": "Preset",
      "history.col.state": "State",
      "history.col.images": "Photos",
      "history.col.actions": "Actions",
      "history.images": "{done}/{total} done, {failed} failed",

      "size.b": "{n} B",
      "size.kb": "{n} KB",
      "size.mb": "{n} MB",
      "size.gb": "{n} GB",
      "footer": "Runs on this computer; nothing is sent anywhere else."
    },
    "zh-CN": {
      "app.title": "retouch 照片批量修复",
      "app.subtitle": "批量增强照片：拖入照片，选择预设，下载结果。",
      "lang.toggle": "English",
      "lang.toggle.label": "切换为英文界面",

      "new.title": "新建批次",
      "drop.title": "将照片或整个文件夹拖到这里",
      "drop.hint": "支持 JPEG、PNG、WebP、TIFF、BMP、GIF。文件夹会保留子文件夹结构。",
      "drop.label": "照片和文件夹拖放区",
      "pick.files": "选择文件…",
      "pick.folder": "选择文件夹…",
      "files.none": "尚未选择照片。",
      "files.summary": "{count} 张照片，共 {size}",
      "files.summary.one": "1 张照片，共 {size}",
      "files.clear": "清空",
      "files.remove": "移除 {name}",
      "files.more": "… 另有 {count} 个",
      "files.refused": "未添加（不是图片文件）：{names}",
      "files.ignored": "已忽略隐藏文件或系统文件：{names}",
      "files.reading": "正在读取拖入的文件夹…",

      "preset.label": "预设",
      "preset.loading": "正在加载预设…",
      "params.title": "参数",
      "params.hint": "只发送你修改过的值，其余保持预设的设置。",
      "params.reset": "恢复预设值",
      "params.changed": "已修改 {count} 项",
      "params.empty": "（空）",
      "params.on": "开",
      "params.off": "关",
      "params.default": "默认",
      "params.none": "此步骤没有参数。",
      "params.step": "第 {n} 步：{op}",
      "params.bad.number": "{field}：请输入数字",
      "params.bad.integer": "{field}：请输入整数",
      "params.bad.min": "{field}：不能小于 {min}",
      "params.bad.max": "{field}：不能大于 {max}",
      "params.bad.json": "{field}：请输入 JSON 值，例如 [10, 10, 100, 40]",
      "params.bad.pattern": "{field}：格式不正确",
      "masks.title": "修复（inpaint）用的蒙版",
      "masks.hint": "每张照片一个蒙版，文件名（不含扩展名）相同；白色区域将被移除。",
      "masks.pick": "选择蒙版…",
      "masks.count": "已选择 {count} 个蒙版",
      "masks.none": "未选择蒙版。",
      "submit": "开始处理",
      "submit.uploading": "正在上传… {percent}%",
      "submit.starting": "正在启动…",
      "error.nofiles": "请先选择至少一张照片。",
      "error.network": "无法连接服务器：{reason}",
      "error.upload": "上传中断：无法连接服务器。",
      "error.http": "{detail}（HTTP {status}）",
      "error.presets": "无法加载预设：{reason}",
      "error.batch": "无法加载批次 {id}：{reason}",
      "error.poll": "与服务器的连接中断（{reason}），正在重试…",
      "error.auth": "此服务器需要访问令牌：请在地址中加上 ?token=… 打开页面。",

      "batch.title": "批次 {id}",
      "batch.preset": "预设 {preset}",
      "batch.overrides": "修改的参数：{list}",
      "batch.created": "开始于 {time}",
      "batch.progress": "已完成 {finished} / {total}",
      "batch.counts": "完成 {done} · 处理中 {running} · 等待 {pending} · 失败 {failed}",
      "batch.failed": "批次失败：{error}",
      "batch.partial": "已结束：{total} 张中有 {failed} 张失败（见各卡片）。",
      "batch.cancelled": "批次已取消。",
      "batch.skipped": "跳过的文件",
      "batch.cancel": "取消批次",
      "batch.cancelling": "正在取消…",
      "batch.report": "打开审阅报告",
      "batch.zip": "全部下载（ZIP）",
      "batch.zip.selected": "下载所选（{count}）",
      "batch.select.all": "全选",
      "batch.select.none": "取消全选",
      "batch.selected": "已选 {count} 张",
      "batch.close": "关闭批次",
      "batch.empty": "此批次没有照片。",
      "regen.title": "重新生成所选照片",
      "regen.hint": "在下方修改参数，在卡片上勾选照片，然后重新生成。",
      "regen.submit": "重新生成所选（{count}）",
      "regen.none": "请至少勾选一张照片再重新生成。",
      "regen.busy": "请等批次处理完成后再重新生成。",

      "card.select": "选择 {name}",
      "card.compare": "对比",
      "card.compare.label": "对比 {name} 的处理前后",
      "card.phase": "阶段：{phase}",
      "card.score": "评分 {score}",
      "card.nopreview": "暂无预览",
      "card.download": "下载",
      "card.download.label": "下载 {name} 的结果",

      "status.pending": "等待中",
      "status.prepared": "已准备",
      "status.processed": "已处理",
      "status.reviewed": "已评估",
      "status.done": "完成",
      "status.failed": "失败",
      "state.queued": "排队中",
      "state.running": "处理中",
      "state.done": "已完成",
      "state.failed": "失败",
      "state.cancelled": "已取消",
      "phase.prepare": "准备",
      "phase.process": "处理",
      "phase.review": "评估",
      "phase.export": "导出",
      "verdict.improved": "有改善",
      "verdict.unchanged": "无明显变化",
      "verdict.worse": "变差",

      "compare.title": "处理前后对比：{name}",
      "compare.slider": "滑块位置：左侧为处理前，右侧为处理后",
      "compare.before": "处理前",
      "compare.after": "处理后",
      "compare.crops": "细节最丰富区域的 100% 裁切",
      "compare.crop.before": "处理前（放大到结果尺寸）",
      "compare.crop.after": "处理后，100%",
      "compare.score": "评分",
      "compare.verdict": "结论",
      "compare.output": "ZIP 中的文件",
      "compare.nothumbs": "这张照片还没有预览。",
      "compare.prev": "上一张",
      "compare.next": "下一张",
      "compare.close": "关闭",

      "history.title": "以往批次",
      "history.refresh": "刷新",
      "history.none": "还没有批次。",
      "history.open": "打开",
      "history.open.label": "打开批次 {id}",
      "history.col.created": "开始时间",
      "history.col.id": "批次",
      "history.col.preset": "预设",
      "history.col.state": "状态",
      "history.col.images": "照片",
      "history.col.actions": "操作",
      "history.images": "完成 {done}/{total}，失败 {failed}",

      "size.b": "{n} 字节",
      "size.kb": "{n} KB",
      "size.mb": "{n} MB",
      "size.gb": "{n} GB",
      "footer": "在本机运行，不会把任何内容发送到其他地方。"
    }
  };

  var listeners = [];

  function pick(lang) {
    if (!lang) return "en";
    return /^zh\b/i.test(lang) ? "zh-CN" : "en";
  }

  function stored() {
    try {
      return window.localStorage.getItem(STORE_KEY);
    } catch (e) {
      return null; // storage can be disabled (private mode, file://)
    }
  }

  var current = pick(stored() || navigator.language || "en");

  /** The string for key in the current language, with {name} placeholders filled in. */
  function t(key, vars) {
    var table = dict[current] || dict.en;
    var text = Object.prototype.hasOwnProperty.call(table, key) ? table[key] : dict.en[key];
    if (text === undefined) {
      text = key; // a missing key shows itself rather than nothing, so it gets noticed
    }
    if (vars) {
      text = text.replace(/\{(\w+)\}/g, function (m, name) {
        return Object.prototype.hasOwnProperty.call(vars, name) ? String(vars[name]) : m;
      });
    }
    return text;
  }

  /** Fill every data-i18n* element under root with the current language. */
  function apply(root) {
    root = root || document;
    root.querySelectorAll("[data-i18n]").forEach(function (el) {
      el.textContent = t(el.getAttribute("data-i18n"));
    });
    ["title", "aria-label", "placeholder"].forEach(function (attr) {
      root.querySelectorAll("[data-i18n-" + attr + "]").forEach(function (el) {
        el.setAttribute(attr, t(el.getAttribute("data-i18n-" + attr)));
      });
    });
  }

  function setLang(lang) {
    current = pick(lang);
    try {
      window.localStorage.setItem(STORE_KEY, current);
    } catch (e) {
      /* not remembered; the page still switches */
    }
    document.documentElement.lang = current;
    document.title = t("app.title");
    apply(document);
    listeners.forEach(function (fn) {
      fn(current);
    });
  }

  window.I18N = {
    t: t,
    apply: apply,
    setLang: setLang,
    lang: function () {
      return current;
    },
    toggle: function () {
      setLang(current === "en" ? "zh-CN" : "en");
    },
    onChange: function (fn) {
      listeners.push(fn);
    },
    dict: dict
  };
})();
