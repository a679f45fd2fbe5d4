"""Integration tests of real webdataset clients (open_clip, timm) on cloudwds: harness and run scripts."""
