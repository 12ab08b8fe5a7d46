"""``hgsmi host``: the host daemon, its TOML config and the channel drivers it loads.

:mod:`.host_daemon` runs a :class:`hgsmi.Host` with the built-in services
(:mod:`hgsmi.services`) and the drivers of :mod:`.drivers`, configured by
:mod:`.config`, and publishes statistics for ``hgsmi stat`` (its own
footprint from :mod:`._procstat`).
"""
