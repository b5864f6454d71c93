"""Jobs: questions computed in the background, with progress and cancel.

:mod:`~service.jobs.records` is a job's record (SQLite, or Redis in
:mod:`~service.jobs.redis_records`); :mod:`~service.jobs.manager` starts, lists, follows
and cancels jobs and takes over those of stopped processes; :mod:`~service.jobs.runner`
runs one job; :mod:`~service.jobs.turns` gives queued jobs their places in turns.
"""
