"""The tar format, by job: header fields (:mod:`.headers`), the streaming reader
(:mod:`.reader`) and how it takes member data out of the stream (:mod:`.buffered`), gzip input
and gzip members (:mod:`.gzipped`), and the writing side (:mod:`.writer`).

Code outside imports these names from :mod:`cloudwds.tario`, the one public face of the format
(the modules here may be rearranged; that import path stays).
"""
