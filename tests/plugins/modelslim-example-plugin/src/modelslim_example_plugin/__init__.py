"""An example third-party ModelSlim plugin: adds the `weight_clip` processor through an entry point."""
