"""``hgsmi bench``: hgsmi against HGCM-style copying, sockets, the stdlib, third-party
peers and the machine's own C ceiling, side by side in one run.

:mod:`.runner` is the front end (the table, the ratios, the JSON);
:mod:`.transports` the transports behind one interface; :mod:`.busy` judges
whether the machine was quiet.  The C programs (``c/*.c``) ship as package
data and are compiled on first use into a per-user cache
(:mod:`.transports.cbuild`).  Installed with ``pip install 'hgsmi[bench]'``
for the optional peers and ``--plot``.
"""
