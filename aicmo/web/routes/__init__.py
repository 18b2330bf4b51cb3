"""One router per area of the web service."""
