"""Integrations with optional libraries; each module imports its library at the top
and is imported only when that library is installed."""
