"""A shell-command handler: the task as JSON on stdin, the result as JSON on stdout.

Any program works the same way (a non-zero exit is a failure; its last stderr
line travels back to the requester).
"""

import json
import sys

task = json.load(sys.stdin)
text = str(task["input"])
print(json.dumps({"words": len(text.split()), "chars": len(text)}))
