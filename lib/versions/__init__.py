"""Version history of images, kept in the workspace as small immutable JSON objects.

Every result a run produces for an image is a *version*: the recipe, the result key, the
scores, the run id and the time. Nothing is ever rewritten, so two runs recording versions of
the same image at the same moment can't lose one another's work (no read-modify-write):

    versions/<image-id>/v/<stamp>.json            one version (immutable)
    versions/<image-id>/current/<stamp>.json      "make version X current" (rollback)
    versions/<image-id>/thumbs/<stamp>-after.jpg  the version's thumbnails (and -before.jpg)

``<stamp>`` is ``<nanoseconds since the epoch, 20 digits>-<random hex>``: unique per writer and
sortable by time. The current version is decided by the latest event: a new version is
current from the moment it is recorded, until a later version or a later "current" object
(a rollback) supersedes it. Version numbers are positions in time order (1 = oldest).

Image identity: an image is its source *content* (sha256) plus its *file name* (without
folders). The same photo under the same name is the same image wherever it is read from;
editing or renaming the source starts a new history. A run remembers the identity of each
of its images (``output.image_id`` in its records), so a replacement source processed for
that slot (``retouch replace``) continues the slot's history.

:mod:`.store` holds the version records and the store (history, current, best, rollback,
comparison pictures); :mod:`.runs` what runs leave in the workspace (their results recorded
as versions, saved runs, replacements).
"""

from retouch.lib.versions.runs import (
    RunListing,
    RunState,
    apply_version,
    list_runs,
    load_run,
    previous_entry,
    record_run_image,
    record_version,
    run_image_id,
    save_replacement,
    save_run_info,
    undo_replacement,
)
from retouch.lib.versions.store import (
    COMPARE_GAP,
    VERSIONS_DIR,
    Version,
    VersionStore,
    dumps,
    image_id,
    new_stamp,
    preview_jpeg,
    side_by_side,
    stamp_time,
)

__all__ = [
    "COMPARE_GAP",
    "VERSIONS_DIR",
    "RunListing",
    "RunState",
    "Version",
    "VersionStore",
    "apply_version",
    "dumps",
    "image_id",
    "list_runs",
    "load_run",
    "new_stamp",
    "preview_jpeg",
    "previous_entry",
    "record_run_image",
    "record_version",
    "run_image_id",
    "save_replacement",
    "save_run_info",
    "side_by_side",
    "stamp_time",
    "undo_replacement",
]
