"""The run's log: the journal a run writes, and what reads it back.

* ``journal``: the JSON-lines journal (format, writer, reader)
* ``reader``: a run's journal read once, as ``Turn`` records (``RunLog``)
* ``status``: ``azclaw status``; ``report`` and ``charts``: ``azclaw report``
* ``transcript``: what the team said, as text and as HTML; ``show``: ``azclaw show``
* ``live``: reading a journal as it grows (``show --follow``); ``serve``: ``azclaw report --serve``

Nothing here imports the round loop; the loop imports only ``journal``.
"""
