"""Quality: analysis before a run, scores after it, gates, reports and previews."""
