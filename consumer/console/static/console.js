// kvs-analytics console: a little plain JavaScript, no build step.
"use strict";
const KvsConsole = {
  // The cameras page: refresh each tile's figures and picture from tiles.json.
  liveTiles(section) {
    if (!section) return;
    const every = 1000 * Number(section.dataset.refresh || 5);
    const text = (tile, field, value) => {
      const node = tile.querySelector(`[data-field="${field}"]`);
      if (node && node.textContent !== value) node.textContent = value;
    };
    const update = async () => {
      try {
        const response = await fetch(section.dataset.src, {cache: "no-store"});
        if (!response.ok) return;
        for (const t of (await response.json()).tiles) {
          const tile = section.querySelector(`[data-stream="${CSS.escape(t.stream)}"]`);
          if (!tile) { location.reload(); return; }  // a new camera: draw the page again
          const badge = tile.querySelector('[data-field="health"]');
          badge.className = `badge ${t.health}`;
          text(tile, "health", t.health);
          text(tile, "owner", t.owner || "-");
          text(tile, "lag", t.lag_seconds == null ? "-" : `${t.lag_seconds.toFixed(1)} s`);
          text(tile, "fpm", t.frames_per_minute == null ? "-" : String(t.frames_per_minute));
          text(tile, "events", String(t.events));
          const img = tile.querySelector("img.thumb");
          if (img && t.thumbnail && t.thumbnail.url && img.dataset.key !== t.thumbnail.key) {
            img.src = t.thumbnail.url;
            img.dataset.key = t.thumbnail.key;
          }
        }
        section.dataset.updated = String(Date.now());
      } catch (err) { /* the next poll tries again */ }
    };
    setInterval(update, every);
  },

  // A camera's timeline: "Play clip" plays the event's clip in the page and shows the frame
  // records around it (persons and their boxes over each frame's picture).
  timeline(list) {
    if (!list) return;
    const player = document.getElementById("player");
    const video = document.getElementById("clip");
    const frames = document.getElementById("frames");
    list.addEventListener("click", async (click) => {
      const button = click.target.closest("button.play");
      if (!button) return;
      const item = button.closest("li.event");
      list.querySelectorAll("li.playing").forEach((li) => li.classList.remove("playing"));
      item.classList.add("playing");
      player.hidden = false;
      document.getElementById("player-title").textContent =
        item.querySelector("h3").textContent;
      video.src = item.dataset.clip;
      video.dataset.event = item.dataset.event;
      video.play().catch(() => {});
      frames.replaceChildren();
      const response = await fetch(`${item.dataset.frames}?seconds=3`, {cache: "no-store"});
      if (response.ok) KvsConsole.drawFrames(frames, (await response.json()).frames);
      player.scrollIntoView({block: "nearest"});
    });
  },

  drawFrames(container, records) {
    for (const record of records) {
      const figure = document.createElement("div");
      figure.className = "frame";
      figure.dataset.persons = String(record.persons.length);
      const pic = document.createElement("div");
      pic.className = "pic";
      if (record.image && record.image.url) {
        const img = document.createElement("img");
        img.src = record.image.url;
        img.alt = `frame ${record.frame_index}`;
        pic.append(img);
      }
      for (const person of record.persons) {
        const b = person.BoundingBox || {};
        const box = document.createElement("div");
        box.className = "box";
        Object.assign(box.style, {left: `${100 * b.Left}%`, top: `${100 * b.Top}%`,
                                  width: `${100 * b.Width}%`, height: `${100 * b.Height}%`});
        const label = document.createElement("span");
        label.textContent = person.TrackId == null ? "?" : `#${person.TrackId}`;
        box.append(label);
        pic.append(box);
      }
      const caption = document.createElement("div");
      const when = new Date(record.producer_time * 1000).toISOString().slice(11, 23);
      caption.textContent = `${when} · ${record.persons.length} person(s)`;
      figure.append(pic, caption);
      container.append(figure);
    }
  },
};
