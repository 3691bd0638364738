"""Side-by-side (SBS) human evaluation of two prediction sets: blinded tasks with gold questions
(`make`), a rating page (`app`, answers in SQLite via `store`), and the GSB / Goodrate report with
rater quality controls (`report`)."""
