"""A minimal radflow plugin (the plugin author's guide walks through it)."""
