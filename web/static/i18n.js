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
      "drop.title": "Drop photos, videos or whole folders here",
      "drop.hint": "Photos: JPEG, PNG, WebP, TIFF, BMP or GIF. Videos: MP4, MOV, MKV, WebM or AVI. Folders keep their sub-folders.",
      "drop.label": "Drop zone for photos, videos and folders",
      "pick.files": "Choose files…",
      "pick.folder": "Choose a folder…",
      "files.none": "No photos or videos chosen yet.",
      "files.summary": "{count} photos, {size}",
      "files.summary.one": "1 photo, {size}",
      "files.summary.videos": "{count} files ({videos} of them videos), {size}",
      "files.clear": "Clear",
      "files.remove": "Remove {name}",
      "files.more": "… and {count} more",
      "files.refused": "Not added (not an image or video file): {names}",
      "files.ignored": "Ignored hidden or system files: {names}",
      "files.reading": "Reading the dropped folders…",

      "preset.label": "Preset",
      "preset.loading": "Loading presets…",
      "preset.unavailable.option": "{name} (cannot run here)",
      "preset.unavailable.title": "Presets that cannot run on this server",
      "preset.unavailable.weights": "model weights missing on this server: {files}. Put the files in {dir}, run `retouch models pull {models}` where the server can reach the internet, or set RETOUCH_MODEL_MIRROR to a folder that holds them; then reload the page.",
      "preset.fetch": "Model weights not on this server yet: {files}. They are downloaded when you start the batch (this can take a while the first time).",
      "params.advanced": "Advanced",
      "export.title": "Export settings",
      "export.hint": "How each result is written: only the values you change are sent.",
      "export.format": "Format",
      "export.format.same": "same as the input",
      "export.quality": "Quality (JPEG/WebP, 1-100)",
      "export.name_template": "File name",
      "export.name_template.hint": "Placeholders: {stem}, {ext}, {index}, {preset}, {folder}, {date}, {score}, {verdict}; '/' makes folders.",
      "export.resize": "Resize",
      "export.resize.none": "keep the size",
      "export.resize.max_side": "longest side",
      "export.resize.exact": "exact width × height",
      "export.resize.max_side.label": "Longest side (px)",
      "export.resize.width": "Width (px)",
      "export.resize.height": "Height (px)",
      "export.resize.mode": "Fit",
      "export.resize.mode.crop": "fill and crop",
      "export.resize.mode.pad": "fit inside and pad",
      "export.watermark": "Watermark text",
      "export.watermark.hint": "Leave empty for no watermark.",
      "export.watermark.position": "Watermark position",
      "export.watermark.opacity": "Watermark opacity (0-1)",
      "export.bad.template": "File name: enter a name template, e.g. {stem}.{ext}",
      "position.top-left": "top left",
      "position.top": "top",
      "position.top-right": "top right",
      "position.left": "left",
      "position.center": "centre",
      "position.right": "right",
      "position.bottom-left": "bottom left",
      "position.bottom": "bottom",
      "position.bottom-right": "bottom right",
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
      "params.bad.range": "{field}: a whole number from {min} to {max}",
      "masks.title": "Masks for inpainting",
      "masks.hint": "One mask per photo with the same file name stem (white = remove).",
      "masks.pick": "Choose masks…",
      "masks.count": "{count} masks chosen",
      "masks.none": "No masks chosen.",
      "masks.paint.label": "Paint a mask on",
      "masks.paint": "Paint mask…",
      "masks.paint.nofiles": "Choose photos first to paint a mask on one of them.",
      "masks.paint.option.painted": "{name} (mask painted)",
      "masks.painted": "painted mask {mask}",
      "masks.paint.edit": "Edit",
      "masks.paint.edit.label": "Edit the painted mask of {name}",
      "masks.paint.remove": "Remove",
      "masks.paint.remove.label": "Remove the painted mask of {name}",
      "masks.paint.added": "Painted mask {mask} added for {name}.",
      "paint.title": "Paint a mask: {name}",
      "paint.tools": "Painting tools",
      "paint.tool": "Tool",
      "paint.brush": "Brush",
      "paint.eraser": "Eraser",
      "paint.size": "Brush size",
      "paint.size.value": "{size} px",
      "paint.undo": "Undo",
      "paint.undo.title": "Undo the last stroke (Ctrl+Z)",
      "paint.clear": "Clear",
      "paint.hint": "Paint over what to remove: it is white in the mask, which has the photo's full size. Keys: B brush, E eraser, [ and ] brush size, Ctrl+Z undo, Escape cancel.",
      "paint.loading": "Loading the photo…",
      "paint.canvas": "Painting area: draw with the mouse, a pen or a finger",
      "paint.cancel": "Cancel",
      "paint.done": "Done",
      "paint.empty": "Nothing is painted: paint over what to remove, or cancel.",
      "paint.error.decode": "This browser cannot show {name}, so no mask can be painted on it here; choose a mask file instead.",
      "paint.error.encode": "The mask could not be made (the photo may be too large for this browser).",
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
      "batch.progress.live": "{reviewed} of {total} reviewed · {exported} exported",
      "batch.eta": "about {time} left",
      "duration.s": "{s} s",
      "duration.m": "{m} min {s} s",
      "duration.h": "{h} h {m} min",
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
      "card.step": "step {n} of {total}: {op}",
      "card.step.open": "step {n}: {op}",
      "card.frames": "frame {done}/{total}",
      "card.frames.open": "frame {done}",
      "card.frames.stored": "stored by an earlier run",
      "card.fps": "{fps} fps",
      "card.frames.eta": "about {time} left",
      "card.segment": "segment {n}/{total}",
      "card.video.label": "The result of {name} (video)",
      "card.reused": "reused",
      "card.reused.title": "Taken from the cache: this result was computed before with the same settings",
      "card.notstarted": "not started",
      "card.score": "score {score}",
      "card.nopreview": "no preview yet",
      "card.download": "Download",
      "card.download.label": "Download the result of {name}",
      "card.download.frames": "Download {count} frames (ZIP)",
      "card.download.frames.label": "Download the {count} frames of {name} as a ZIP (with frames.csv and the audio)",
      "card.firstframe": "first frame",

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
      "verdict.restyled": "re-drawn",
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
      "compare.zoom": "Zoom",
      "compare.zoom.in": "Zoom in",
      "compare.zoom.out": "Zoom out",
      "compare.zoom.actual": "100%",
      "compare.zoom.actual.title": "Actual size: one pixel of the result per screen pixel",
      "compare.zoom.fit": "Fit",
      "compare.zoom.fit.title": "Fit the whole photo in view",
      "compare.zoom.level": "{pct}%",
      "compare.zoom.hint": "Scroll or pinch to zoom, drag to pan; drag the white line to compare.",
      "compare.full.loading": "Loading the full-size images…",
      "compare.full.failed": "The full-size image is not available ({reason}); the preview is shown.",

      "styles.title": "Compare styles",
      "styles.hint": "Re-draw one photo in several styles and see them side by side, each with its score. The photo is reduced to the working size first; the server draws one comparison at a time.",
      "styles.pick": "Choose a photo…",
      "styles.photo": "Photo: {name}",
      "styles.photo.batch": "Photo: {name} (the first photo chosen for the batch)",
      "styles.photo.none": "No photo yet: choose one here, or choose photos for a batch above.",
      "styles.photo.clear": "Clear",
      "styles.choose": "Styles (tick 2 to 6)",
      "styles.loading": "Loading styles…",
      "styles.group.preset": "Presets",
      "styles.group.model": "Re-drawing models",
      "styles.unavailable": "{name} (cannot run here)",
      "styles.size": "Working size",
      "styles.size.hint": "the longest side of the copy the styles are drawn on",
      "styles.run": "Compare styles",
      "styles.running": "Rendering {count} styles… {time}",
      "styles.done": "{count} styles rendered in {time}.",
      "styles.error.nophoto": "Choose a photo first.",
      "styles.error.count": "Tick {min} to {max} styles (now {count}).",
      "styles.error.load": "Could not load the styles: {reason}",
      "styles.sheet.alt": "{name}, then the same photo in each style: {styles}",
      "styles.col.style": "Style",
      "styles.col.before": "Photo's score",
      "styles.col.score": "Score",
      "styles.col.verdict": "Verdict",
      "styles.col.time": "Time",
      "styles.best": "best",
      "styles.failed": "failed: {error}",

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
      "drop.title": "将照片、视频或整个文件夹拖到这里",
      "drop.hint": "照片支持 JPEG、PNG、WebP、TIFF、BMP、GIF；视频支持 MP4、MOV、MKV、WebM、AVI。文件夹会保留子文件夹结构。",
      "drop.label": "照片、视频和文件夹拖放区",
      "pick.files": "选择文件…",
      "pick.folder": "选择文件夹…",
      "files.none": "尚未选择照片或视频。",
      "files.summary": "{count} 张照片，共 {size}",
      "files.summary.one": "1 张照片，共 {size}",
      "files.summary.videos": "{count} 个文件（其中 {videos} 个视频），共 {size}",
      "files.clear": "清空",
      "files.remove": "移除 {name}",
      "files.more": "… 另有 {count} 个",
      "files.refused": "未添加（不是图片或视频文件）：{names}",
      "files.ignored": "已忽略隐藏文件或系统文件：{names}",
      "files.reading": "正在读取拖入的文件夹…",

      "preset.label": "预设",
      "preset.loading": "正在加载预设…",
      "preset.unavailable.option": "{name}（此服务器无法运行）",
      "preset.unavailable.title": "此服务器无法运行的预设",
      "preset.unavailable.weights": "此服务器缺少模型权重文件：{files}。请把文件放到 {dir}，或在能联网的服务器上运行 `retouch models pull {models}`，或将 RETOUCH_MODEL_MIRROR 设为存有这些文件的文件夹；然后重新加载页面。",
      "preset.fetch": "此服务器上还没有这些模型权重：{files}。开始处理时会自动下载（首次可能需要一些时间）。",
      "params.advanced": "高级",
      "export.title": "导出设置",
      "export.hint": "每个结果的写出方式：只发送你修改过的值。",
      "export.format": "格式",
      "export.format.same": "与输入相同",
      "export.quality": "质量（JPEG/WebP，1-100）",
      "export.name_template": "文件名",
      "export.name_template.hint": "占位符：{stem}、{ext}、{index}、{preset}、{folder}、{date}、{score}、{verdict}；“/”会生成文件夹。",
      "export.resize": "调整尺寸",
      "export.resize.none": "保持尺寸",
      "export.resize.max_side": "限制最长边",
      "export.resize.exact": "指定宽 × 高",
      "export.resize.max_side.label": "最长边（像素）",
      "export.resize.width": "宽度（像素）",
      "export.resize.height": "高度（像素）",
      "export.resize.mode": "适配方式",
      "export.resize.mode.crop": "填满并裁切",
      "export.resize.mode.pad": "完整放入并留边",
      "export.watermark": "水印文字",
      "export.watermark.hint": "留空则不加水印。",
      "export.watermark.position": "水印位置",
      "export.watermark.opacity": "水印不透明度（0-1）",
      "export.bad.template": "文件名：请输入命名模板，例如 {stem}.{ext}",
      "position.top-left": "左上",
      "position.top": "上方",
      "position.top-right": "右上",
      "position.left": "左侧",
      "position.center": "居中",
      "position.right": "右侧",
      "position.bottom-left": "左下",
      "position.bottom": "下方",
      "position.bottom-right": "右下",
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
      "params.bad.range": "{field}：请输入 {min} 到 {max} 之间的整数",
      "masks.title": "修复（inpaint）用的蒙版",
      "masks.hint": "每张照片一个蒙版，文件名（不含扩展名）相同；白色区域将被移除。",
      "masks.pick": "选择蒙版…",
      "masks.count": "已选择 {count} 个蒙版",
      "masks.none": "未选择蒙版。",
      "masks.paint.label": "在此照片上绘制蒙版",
      "masks.paint": "绘制蒙版…",
      "masks.paint.nofiles": "请先选择照片，然后可以在其中一张上绘制蒙版。",
      "masks.paint.option.painted": "{name}（已绘制蒙版）",
      "masks.painted": "已绘制蒙版 {mask}",
      "masks.paint.edit": "编辑",
      "masks.paint.edit.label": "编辑 {name} 的绘制蒙版",
      "masks.paint.remove": "移除",
      "masks.paint.remove.label": "移除 {name} 的绘制蒙版",
      "masks.paint.added": "已为 {name} 添加绘制的蒙版 {mask}。",
      "paint.title": "绘制蒙版：{name}",
      "paint.tools": "绘制工具",
      "paint.tool": "工具",
      "paint.brush": "画笔",
      "paint.eraser": "橡皮擦",
      "paint.size": "画笔大小",
      "paint.size.value": "{size} 像素",
      "paint.undo": "撤销",
      "paint.undo.title": "撤销上一笔（Ctrl+Z）",
      "paint.clear": "清除",
      "paint.hint": "涂抹要去除的部分：它在蒙版中为白色，蒙版与照片原始尺寸相同。快捷键：B 画笔，E 橡皮擦，[ 和 ] 调整画笔大小，Ctrl+Z 撤销，Esc 取消。",
      "paint.loading": "正在加载照片…",
      "paint.canvas": "绘制区域：可用鼠标、手写笔或手指绘制",
      "paint.cancel": "取消",
      "paint.done": "完成",
      "paint.empty": "尚未绘制任何内容：请涂抹要去除的部分，或取消。",
      "paint.error.decode": "此浏览器无法显示 {name}，因此无法在这里为它绘制蒙版；请改为选择蒙版文件。",
      "paint.error.encode": "无法生成蒙版（照片可能超出此浏览器的处理能力）。",
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
      "batch.progress.live": "已评估 {reviewed} / {total} · 已导出 {exported}",
      "batch.eta": "预计还需 {time}",
      "duration.s": "{s} 秒",
      "duration.m": "{m} 分 {s} 秒",
      "duration.h": "{h} 小时 {m} 分",
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
      "card.step": "第 {n}/{total} 步：{op}",
      "card.step.open": "第 {n} 步：{op}",
      "card.frames": "第 {done}/{total} 帧",
      "card.frames.open": "第 {done} 帧",
      "card.frames.stored": "取自先前运行存储的片段",
      "card.fps": "{fps} 帧/秒",
      "card.frames.eta": "预计还需 {time}",
      "card.segment": "第 {n}/{total} 段",
      "card.video.label": "{name} 的结果（视频）",
      "card.reused": "复用",
      "card.reused.title": "取自缓存：相同设置下此前已算出这个结果",
      "card.notstarted": "未开始",
      "card.score": "评分 {score}",
      "card.nopreview": "暂无预览",
      "card.download": "下载",
      "card.download.label": "下载 {name} 的结果",
      "card.download.frames": "下载 {count} 帧（ZIP）",
      "card.download.frames.label": "以 ZIP 下载 {name} 的 {count} 帧（含 frames.csv 和音频）",
      "card.firstframe": "第一帧",

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
      "verdict.restyled": "已转绘",
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
      "compare.zoom": "缩放",
      "compare.zoom.in": "放大",
      "compare.zoom.out": "缩小",
      "compare.zoom.actual": "100%",
      "compare.zoom.actual.title": "实际大小：结果的一个像素对应屏幕的一个像素",
      "compare.zoom.fit": "适合窗口",
      "compare.zoom.fit.title": "整张照片显示在视图中",
      "compare.zoom.level": "{pct}%",
      "compare.zoom.hint": "滚动鼠标滚轮或双指捏合缩放，拖动平移；拖动白线进行对比。",
      "compare.full.loading": "正在加载原尺寸图像…",
      "compare.full.failed": "原尺寸图像不可用（{reason}），显示的是预览。",

      "styles.title": "风格对比",
      "styles.hint": "把一张照片转绘成几种风格并排对比，每种都附有评分。照片会先缩小到工作尺寸；服务器一次只处理一个对比。",
      "styles.pick": "选择照片…",
      "styles.photo": "照片：{name}",
      "styles.photo.batch": "照片：{name}（批次中选择的第一张照片）",
      "styles.photo.none": "尚未选择照片：在这里选择一张，或在上方为批次选择照片。",
      "styles.photo.clear": "清除",
      "styles.choose": "风格（勾选 2 到 6 种）",
      "styles.loading": "正在加载风格…",
      "styles.group.preset": "预设",
      "styles.group.model": "转绘模型",
      "styles.unavailable": "{name}（此服务器无法运行）",
      "styles.size": "工作尺寸",
      "styles.size.hint": "绘制风格时所用副本的最长边",
      "styles.run": "对比风格",
      "styles.running": "正在绘制 {count} 种风格… {time}",
      "styles.done": "已绘制 {count} 种风格，用时 {time}。",
      "styles.error.nophoto": "请先选择一张照片。",
      "styles.error.count": "请勾选 {min} 到 {max} 种风格（当前 {count} 种）。",
      "styles.error.load": "无法加载风格：{reason}",
      "styles.sheet.alt": "{name}，以及同一张照片的各种风格：{styles}",
      "styles.col.style": "风格",
      "styles.col.before": "原照片评分",
      "styles.col.score": "评分",
      "styles.col.verdict": "结论",
      "styles.col.time": "用时",
      "styles.best": "最佳",
      "styles.failed": "失败：{error}",

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


  // Text that comes from the server in English (preset descriptions, each parameter's
  // help), by its exact English wording: a text that changes shows in English until its
  // translation here is updated. User presets' own descriptions stay as written.
  var texts = {
    "zh-CN": {
      // presets
      "Re-draw photos as anime (AnimeGANv2, Paprika style: scenes, streets, landscapes; weights converted from the original AnimeGANv2, non-commercial use). Weights: `retouch models pull animeganv2-paprika`, or `retouch models import animeganv2-paprika paprika.pt`. The generator draws at 1280 px on the long side and the result is resized back to the photo's size; --set restyle.work_side=0 draws at full size (finer strokes, slower).":
        "把照片重绘成动漫风格（AnimeGANv2 Paprika 风格：场景、街道、风景；权重转换自原版 AnimeGANv2，仅限非商业用途）。权重：`retouch models pull animeganv2-paprika`，或 `retouch models import animeganv2-paprika paprika.pt`。生成器在长边 1280 像素下绘制，结果再缩放回照片原尺寸；--set restyle.work_side=0 则按原尺寸绘制（笔触更细，更慢）。",
      "Re-draw portraits as painted anime faces (AnimeGANv2 face-paint v2, MIT). Weights: `retouch models pull animeganv2-face-paint-v2`, or `retouch models import animeganv2-face-paint-v2 face_paint_512_v2.pt`. Trained on 512 px faces: the generator draws at 1024 px on the long side and the result is resized back to the photo's size (--set restyle.work_side=N to change it).":
        "把人像重绘成动漫风格的绘画人脸（AnimeGANv2 face-paint v2，MIT 许可）。权重：`retouch models pull animeganv2-face-paint-v2`，或 `retouch models import animeganv2-face-paint-v2 face_paint_512_v2.pt`。该模型以 512 像素人脸训练：生成器在长边 1024 像素下绘制，结果再缩放回照片原尺寸（用 --set restyle.work_side=N 修改）。",
      "Re-draw photos as paintings with Stable Diffusion img2img (needs `pip install 'retouch[diffusion]'` and a local SD 1.x/SDXL checkpoint: --set restyle.checkpoint=PATH, a .safetensors file or a diffusers folder, or RETOUCH_DIFFUSION_CHECKPOINT). The seed comes from each image's content and the settings, so a rerun gives the same result; --set restyle.seed=N gives another. Minutes per image on a CPU, seconds on a CUDA GPU. Change the style with --set restyle.prompt=...":
        "用 Stable Diffusion 图生图把照片重绘成油画（需要 `pip install 'retouch[diffusion]'` 和本地的 SD 1.x/SDXL 模型：--set restyle.checkpoint=路径，可以是 .safetensors 文件或 diffusers 文件夹，或设置 RETOUCH_DIFFUSION_CHECKPOINT）。种子由每张图片的内容和设置得出，重新运行得到相同结果；--set restyle.seed=N 得到另一种结果。CPU 上每张需要数分钟，CUDA GPU 上只需数秒。用 --set restyle.prompt=... 改变风格。",
      "generator: a feed-forward style model (AnimeGANv2...); diffusion: Stable Diffusion img2img from a local checkpoint (needs retouch[diffusion])":
        "generator：前馈风格模型（AnimeGANv2 等）；diffusion：使用本地模型的 Stable Diffusion 图生图（需要 retouch[diffusion]）",
      "Style generator from the registry (method=generator)":
        "注册表中的风格生成模型（method=generator）",
      "Long side, in pixels, the network works at (0 = the image's own size); the result is resized back to the image's size. Style models draw strokes of a fixed size in pixels, so this sets how coarse the drawing looks":
        "模型绘制时的长边像素数（0 = 图片原尺寸）；结果会缩放回图片原尺寸。风格模型的笔触像素大小固定，因此这个值决定画面的粗细程度",
      "generator: tile size (0 = automatic: the whole image when it fits the memory budget; the generator normalises over what it sees, so whole is best)":
        "generator：分块大小（0 = 自动：内存预算允许时整张处理；生成器按所见范围做归一化，整张效果最好）",
      "diffusion: local Stable Diffusion 1.x/SDXL checkpoint (.safetensors file or diffusers folder); empty = the RETOUCH_DIFFUSION_CHECKPOINT setting":
        "diffusion：本地的 Stable Diffusion 1.x/SDXL 模型（.safetensors 文件或 diffusers 文件夹）；留空 = 使用 RETOUCH_DIFFUSION_CHECKPOINT 设置",
      "diffusion: what the result shows":
        "diffusion：结果应呈现的内容（提示词）",
      "diffusion: what the result must not show":
        "diffusion：结果中不应出现的内容（反向提示词）",
      "diffusion: how far from the photo (0 = unchanged, 1 = ignore it)":
        "diffusion：与原照片的偏离程度（0 = 不变，1 = 完全不参考照片）",
      "diffusion: denoising steps":
        "diffusion：去噪步数",
      "diffusion: prompt guidance scale":
        "diffusion：提示词引导强度",
      "diffusion: sampler":
        "diffusion：采样器",
      "diffusion: added to the seed derived from each image's content; change it for another result (the same value gives the same bytes again)":
        "diffusion：加到由每张图片内容得出的种子上；改变它得到另一种结果（相同的值会再次得到相同的字节）",
      "diffusion: local ControlNet model that keeps the photo's composition (a diffusers folder with config.json and diffusion_pytorch_model.safetensors, or a single .safetensors file), made for the checkpoint's model (SD 1.5 or SDXL) and for the condition `control` computes (a canny ControlNet for canny); empty = none":
        "diffusion：保持照片构图的本地 ControlNet 模型（含 config.json 和 diffusion_pytorch_model.safetensors 的 diffusers 文件夹，或单个 .safetensors 文件），须与所用模型（SD 1.5 或 SDXL）及 control 计算的条件相匹配（canny 条件用 canny ControlNet）；留空 = 不使用",
      "diffusion with a controlnet: what the ControlNet follows, computed from each picture: canny = its edges (OpenCV Canny, no extra model); none = leave the controlnet unused (plain img2img). lineart/depth/pose need annotator models of their own, not supported yet":
        "diffusion 配合 controlnet：ControlNet 依据的条件，由每张图片计算：canny = 边缘（OpenCV Canny，无需额外模型）；none = 不使用 controlnet（普通图生图）。lineart/depth/pose 需要各自的标注模型，暂不支持",
      "diffusion with a controlnet: how strongly the result follows the condition (0 = not at all, 1 = as trained, up to 2)":
        "diffusion 配合 controlnet：结果跟随条件的强度（0 = 完全不跟随，1 = 按训练时的强度，最高 2）",
      "control=canny: lower hysteresis threshold (gradient of the 8-bit picture); edges weaker than this are dropped":
        "control=canny：滞后阈值下限（8 位图片的梯度）；弱于此值的边缘会被丢弃",
      "control=canny: upper threshold; an edge starts where the gradient is above it (lower both for more, fainter edges)":
        "control=canny：阈值上限；梯度高于此值处开始形成边缘（两者都调低可得到更多、更淡的边缘）",
      "Super-resolution x4 for anime, illustrations and line art with Real-ESRGAN x4plus anime 6B.":
        "用 Real-ESRGAN x4plus anime 6B 将动漫、插画和线稿放大 4 倍。",
      "Restore faces with GFPGAN v1.4 and upscale the whole photo x2 with Real-ESRGAN x2plus for the background.":
        "用 GFPGAN v1.4 修复人脸，并用 Real-ESRGAN x2plus 将整张照片（背景）放大 2 倍。",
      "Fast clean-up and x2 enlargement on any CPU: levels and white balance, light denoise, x2 upscale with retouch's own compact model (ships with retouch, nothing to download), gentle sharpening.":
        "任何 CPU 上都能快速完成的清理和 2 倍放大：色阶与白平衡、轻度降噪、用 retouch 自带的小型模型放大 2 倍（随 retouch 提供，无需下载）、适度锐化。",
      "Remove objects or watermarks marked by masks with LaMa (big-lama: `retouch models pull big-lama`, or `retouch models import big-lama FILE`). Masks: --masks DIR (one per image, same file stem), --masks FILE (one mask for every image) or <stem>_mask.png beside each image; white = remove. An image without a mask, or with an all-black one, fails with a reason; --set inpaint.missing_mask=skip passes it through unchanged instead.":
        "用 LaMa 去除蒙版标出的物体或水印（big-lama：`retouch models pull big-lama`，或 `retouch models import big-lama FILE`）。蒙版：--masks DIR（每张图片一个，文件名相同）、--masks FILE（所有图片共用一个蒙版），或图片旁边的 <stem>_mask.png；白色 = 去除。没有蒙版或蒙版全黑的图片会失败并说明原因；改用 --set inpaint.missing_mask=skip 则原样保留。",
      "Remove small marks quickly with OpenCV's Telea fill (no model; large areas smear: use remove-objects for those). Masks as for remove-objects: --masks DIR or FILE, or <stem>_mask.png beside each image; white = remove. An image without a mask fails with a reason; --set inpaint.missing_mask=skip passes it through unchanged instead.":
        "用 OpenCV 的 Telea 算法快速去除小的痕迹（无需模型；大面积会变模糊：请改用 remove-objects）。蒙版规则同 remove-objects：--masks DIR 或 FILE，或图片旁边的 <stem>_mask.png；白色 = 去除。没有蒙版的图片会失败并说明原因；改用 --set inpaint.missing_mask=skip 则原样保留。",
      "Super-resolution x4 for photos with Real-ESRGAN x4plus (tiles sized to the memory available, so large inputs fit).":
        "用 Real-ESRGAN x4plus 将照片放大 4 倍（按可用内存自动分块，大图也能处理）。",
      "Catalogue images for the web: colour and levels corrected, fitted inside 2048 px, sharpened for screens.":
        "用于网页的商品图：校正色彩和色阶，缩放到 2048 像素以内，并针对屏幕锐化。",
      // auto_color
      "Stretch the tonal range to the full range (same map for all channels)":
        "把色调范围拉伸到完整范围（所有通道使用同一映射）",
      "Percent of darkest and of brightest pixels allowed to clip in levels":
        "色阶调整时允许被截断的最暗和最亮像素的百分比",
      "neutral: make near-gray pixels gray (conservative); grayworld: equalise channel means (strong, can tint colourful scenes); none":
        "neutral：把接近灰色的像素校正为灰色（保守）；grayworld：使各通道均值相等（较强，色彩丰富的场景可能偏色）；none：不调整",
      "Blend with the original: 0 = unchanged, 1 = full":
        "与原图混合：0 = 不变，1 = 完全应用",
      // denoise
      "Filter strength in 8-bit levels (about the noise sigma to remove)":
        "滤波强度，以 8 位色阶计（约等于要去除的噪声标准差）",
      "nlmeans (best, slower) or bilateral (fast, edge-preserving)":
        "nlmeans（效果最好，较慢）或 bilateral（快速，保留边缘）",
      "nlmeans patch size in pixels (odd): the neighbourhood compared to judge two pixels alike; smaller keeps fine texture, larger smooths more evenly":
        "nlmeans 的比较块大小（像素，奇数）：用来判断两个像素是否相似的邻域；较小保留细微纹理，较大平滑更均匀",
      "nlmeans search window in pixels (odd): larger finds more similar patches; the time grows with its square":
        "nlmeans 的搜索窗口（像素，奇数）：越大找到的相似块越多；耗时随其平方增长",
      // fit
      "Longest side in pixels (keeps the aspect ratio)": "最长边的像素数（保持宽高比）",
      "Exact width in pixels (with height)": "精确宽度（像素，需同时给出高度）",
      "Exact height in pixels (with width)": "精确高度（像素，需同时给出宽度）",
      "With width+height: contain = fit inside and pad, cover = fill and crop, stretch = distort":
        "给出宽和高时：contain = 完整放入并留边，cover = 填满并裁切，stretch = 拉伸变形",
      "Enlarge images smaller than the target (max_side and contain only)":
        "放大小于目标尺寸的图片（仅用于 max_side 和 contain）",
      "Where cover crops: smart keeps faces, else the most detailed region":
        "cover 的裁切位置：smart 保留人脸，否则保留细节最多的区域",
      "Padding colour for contain (hex RGB); images with alpha are padded transparent":
        "contain 的留边颜色（十六进制 RGB）；带透明通道的图片留透明边",
      // inpaint
      "lama (learned: big-lama, for objects and watermarks), telea (fast marching) or ns (Navier-Stokes); telea and ns are quick but smear large areas":
        "lama（学习模型 big-lama，适合物体和水印）、telea（快速行进法）或 ns（Navier-Stokes 法）；telea 和 ns 速度快，但大面积会变模糊",
      "Inpainting model from the registry (method lama)": "模型库中的修补模型（method lama）",
      "method lama: crop (each masked region with crop_margin px around it), resize (whole image, long side resize_limit) or original (whole image, its size)":
        "method lama：crop（每个蒙版区域连同其周围 crop_margin 像素）、resize（整张图片，长边缩到 resize_limit）或 original（整张图片，原尺寸）",
      "method lama, crop: context around each region, px": "method lama，crop：每个区域周围的上下文（像素）",
      "method lama: long side (px) a crop or, with resize, the image is reduced to before the model runs":
        "method lama：模型运行前，裁切块（或 resize 时的整张图片）的长边缩小到的像素数",
      "method lama: blend the fill's edge over this many px inside the mask": "method lama：在蒙版内侧这么多像素内将填充边缘与原图融合",
      "telea/ns: neighbourhood (pixels) each filled pixel draws from": "telea/ns：每个填充像素取样的邻域大小（像素）",
      "Area to fill as [x, y, w, h] in pixels": "要填充的区域 [x, y, w, h]，单位为像素",
      "Area to fill as [x, y, w, h] in fractions 0..1 of the size": "要填充的区域 [x, y, w, h]，为尺寸的 0..1 比例",
      "Folder of masks named after each image's stem (white = fill), or one mask file for every image":
        "蒙版文件夹，文件名与各图片相同（白色 = 填充），或所有图片共用的一个蒙版文件",
      "Grow masks by this many pixels to cover edges": "将蒙版向外扩展这么多像素以覆盖边缘",
      "When an image has no mask (or an all-black one) and no rect: skip (leave unchanged) or error":
        "图片既无蒙版（或蒙版全黑）也无区域时：skip（保持不变）或 error（报错）",
      // restore_faces
      "Face restoration model from the registry (shipped or imported)": "模型库中的人脸修复模型（内置或导入）",
      "Output size = input size x this": "输出尺寸 = 输入尺寸 × 此倍数",
      "Restore only the face nearest the centre": "只修复最靠近中心的人脸",
      "Upscaling model for the background when upscale > 1; empty = Lanczos resize":
        "upscale > 1 时用于背景的超分辨率模型；留空 = 用 Lanczos 缩放",
      "Passed to the face network; the networks used here (GFPGAN v1.3/v1.4 clean architecture, RestoreFormer) ignore it":
        "传给人脸网络的参数；这里用到的网络（GFPGAN v1.3/v1.4 clean 架构、RestoreFormer）会忽略它",
      "Videos: run the face detector at least every this many frames; the frames between reuse its faces while the picture around each face barely changes (a scene cut or motion detects again). 1 = detect on every frame. Images are always detected":
        "视频：至少每隔这么多帧运行一次人脸检测；其间各帧在每张人脸周围画面几乎不变时沿用其检测结果（镜头切换或运动会重新检测）。1 = 每帧都检测。图片始终检测",
      // sharpen
      "Strength: 0 = none, 1 = double the local contrast": "强度：0 = 不锐化，1 = 局部对比度加倍",
      "Gaussian sigma in pixels: size of the detail sharpened": "高斯 sigma（像素）：被锐化细节的大小",
      "Differences below this (8-bit levels) are left alone: protects flat areas":
        "低于此值（8 位色阶）的差异不处理：保护平坦区域",
      // stylize
      "Effect to apply": "要应用的效果",
      "Spatial extent of the smoothing (pixels)": "平滑的空间范围（像素）",
      "How different colours may be and still be smoothed together (0-1)": "颜色相差多大仍会被一起平滑（0-1）",
      // upscale
      "Upscaling model from the registry (shipped or imported)": "模型库中的超分辨率模型（内置或导入）",
      "Final scale (e.g. 1.5, 2, 3.5); empty = the model's native scale": "最终放大倍数（例如 1.5、2、3.5）；留空 = 模型的原生倍数",
      "Tile size in pixels to bound memory (0 = automatic: the whole image when it fits the memory budget, else tiles; else >= 32)":
        "分块大小（像素），用于限制内存（0 = 自动：内存够用时整张处理，否则分块；其他值需 >= 32）",
      "Tiles per forward pass (0 = automatic: as many as fit the memory budget on a GPU, one on CPU)":
        "每次前向计算处理的分块数（0 = 自动：GPU 上按内存尽量多，CPU 上为 1）",
      "Context around each tile, in input pixels: neighbouring tiles overlap by at least twice this and are blended there":
        "每个分块周围的上下文（输入像素）：相邻分块至少重叠两倍于此，并在重叠处融合",
      "Mirror padding at the image border, in input pixels": "图像边缘的镜像填充（输入像素）",
      "Only for realesr-general-x4v3: 0 = keep noise, 1 = full denoise; empty = model default":
        "仅用于 realesr-general-x4v3：0 = 保留噪点，1 = 完全降噪；留空 = 模型默认值",
      "fp16 inference; empty = on CUDA only (always fp32 on CPU)": "fp16 推理；留空 = 仅在 CUDA 上启用（CPU 上始终 fp32）"
    }
  };

  /** A text from the server (a description, a parameter's help) in the current language. */
  function tx(text) {
    var table = texts[current];
    if (!table || typeof text !== "string") return text;
    return Object.prototype.hasOwnProperty.call(table, text) ? table[text] : text;
  }

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
    tx: tx,
    texts: texts,
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
