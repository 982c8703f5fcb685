"""The events console: web pages served by `kvs-analytics serve` beside the read API (the same
process and store), rendered on the server (Jinja2) with a little plain JavaScript, so there is
no front-end build: cameras (live tiles), a camera's timeline, an event, and search with a
person-count chart.

- `cli`: the `serve` command; `app`: the console's routes added to the read API's
  application, and the optional login.
- `pages`: the page handlers; `tiles`: what a camera's tile shows (fleet, health);
  `fleet`: the lease table read for owners and lag; `timeline`: the SVG time axis;
  `chart`: the person-count chart; `geometry`: zones and lines over a picture; `auth`: login.
"""
