"""The host's built-in services, their quotas and their guest-side clients.

    channel  service  host side                      guest side
    -------  -------  -----------------------------  -----------------------------
    1        setup    the C core itself              ``Guest.query_conf``
    2        echo     :mod:`.builtin` (``echo``)      :func:`.clients.echo`
    3        sink     :mod:`.builtin` (``Sink``,      :func:`.clients.load`
                      ``Streams``)
    4        blob     :mod:`.blob_store`              :class:`.clients.BlobClient`
                      (protocol: :mod:`.blob_protocol`; the store's files: :mod:`.blob_files`)

What the services hold for a guest is bounded by :mod:`.quota`.  These are
applications of the transport (``hgsmi.Host``, ``hgsmi.Guest``): nothing
in the transport imports them.  The host daemon (:mod:`hgsmi.daemon`)
registers them; the CLI (:mod:`hgsmi.cli`) and the demo use the clients.
"""
