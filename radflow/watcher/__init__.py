"""The change watcher: keeps the site catalog in step with Orthanc through ingest flow runs."""

from radflow.watcher.core import Watcher, WatcherConfig

__all__ = ["Watcher", "WatcherConfig"]
