"""Tables (markdown, CSV) and plots (matplotlib) built from run directories."""
