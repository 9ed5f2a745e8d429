"""Pure tensor math of the plugin's algorithms; nothing here imports veRL."""
