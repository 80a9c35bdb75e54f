"""Hang guards for the subprocesses of the end-to-end tests.

A guard only has to turn a hang into a failure with a log before CI's own 30-minute limit. In CI each
end-to-end run shares the 2 cores with the other pytest worker and vLLM's tests: the embedded run took
~270 s alone, 814 s in one CI run and over 900 s in another, so the guard sits well above that.
"""

END_TO_END_S = 1500
