"""Delivery: naming, watermarks, archives and putting results where the user asked."""
