"""Charts of a rule's values: the data (model), its geometry (layout), drawn as SVG or PNG.

One layout feeds both renderers, so the chart on the incident page and the picture in the Slack
thread are the same drawing.
"""
