"""What users run: the ``midi-event-transformer`` command and the web app. Depends on everything below it."""
