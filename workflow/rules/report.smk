# The results report: one static page (results/report/index.html) of every table, figure and audio example.


rule report:
    input: **inputs("report")
    output: **outputs("report")
    params: **params("report")
    log: step_log("report")
    shell: command("report")
