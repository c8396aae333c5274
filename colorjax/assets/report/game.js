// "Which one is real?" (seed 000's experimental game): one original photo and one colorized
// version per round, sides shuffled; the player picks the original; the page keeps the tally.
// Round data: the JSON in <script id="game-data">: {title, rounds: [{images: [a, b], real: 0|1,
// run, source}]}, where images[real] is the ground truth.
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("game-data").textContent);
  var rounds = data.rounds || [];
  var storageKey = "colorjax-game:" + data.title;
  var el = function (id) { return document.getElementById(id); };
  var choices = [el("choice-0"), el("choice-1")];
  var images = [el("image-0"), el("image-1")];
  var captions = [el("caption-0"), el("caption-1")];
  var nextButton = el("next");

  var order = [];
  var position = 0;
  var shown = [0, 1];  // shown[side] = index into the round's images
  var answered = false;
  var tally = loadTally();

  function emptyTally() {
    return {answered: 0, correct: 0, fooled: 0, perRun: {}};
  }

  function loadTally() {
    try {
      var saved = JSON.parse(window.localStorage.getItem(storageKey));
      if (saved && typeof saved.answered === "number" && saved.perRun) return saved;
    } catch (e) { /* storage unavailable (private mode, file:// policy): tally per page load */ }
    return emptyTally();
  }

  function saveTally() {
    try {
      window.localStorage.setItem(storageKey, JSON.stringify(tally));
    } catch (e) { /* the tally then lasts as long as the page */ }
  }

  function shuffle(items) {
    for (var i = items.length - 1; i > 0; i--) {
      var j = Math.floor(Math.random() * (i + 1));
      var t = items[i]; items[i] = items[j]; items[j] = t;
    }
    return items;
  }

  function rate(fooled, total) {
    return total ? (100 * fooled / total).toFixed(1) + " %" : "\u2014";
  }

  function renderTally() {
    el("answered").textContent = tally.answered;
    el("correct").textContent = tally.correct;
    el("fooled").textContent = tally.fooled;
    el("fooling-rate").textContent = rate(tally.fooled, tally.answered);
    var body = el("per-run").tBodies[0];
    while (body.firstChild) body.removeChild(body.firstChild);
    Object.keys(tally.perRun).sort().forEach(function (run) {
      var r = tally.perRun[run];
      var row = body.insertRow();
      [run, r.answered, r.fooled, rate(r.fooled, r.answered)].forEach(function (value) {
        row.insertCell().textContent = value;
      });
    });
  }

  function newGame() {
    order = shuffle(rounds.map(function (_, i) { return i; }));
    position = 0;
    showRound();
  }

  function showRound() {
    if (!rounds.length) {
      el("progress").textContent = "No pairs to show: the runs have no sample grids yet.";
      choices.forEach(function (c) { c.disabled = true; });
      return;
    }
    var round = rounds[order[position]];
    shown = Math.random() < 0.5 ? [0, 1] : [1, 0];
    for (var side = 0; side < 2; side++) {
      images[side].src = round.images[shown[side]];
      captions[side].textContent = "";
      choices[side].className = "choice";
      choices[side].disabled = false;
    }
    answered = false;
    el("verdict").textContent = "";
    nextButton.disabled = true;
    el("progress").textContent = "Pair " + (position + 1) + " of " + rounds.length;
  }

  function choose(side) {
    if (answered || !rounds.length) return;
    answered = true;
    var round = rounds[order[position]];
    var realSide = shown[0] === round.real ? 0 : 1;
    var correct = side === realSide;
    tally.answered += 1;
    if (correct) tally.correct += 1; else tally.fooled += 1;
    var perRun = tally.perRun[round.run] || (tally.perRun[round.run] = {answered: 0, fooled: 0});
    perRun.answered += 1;
    if (!correct) perRun.fooled += 1;

    captions[realSide].textContent = "Original photo";
    captions[1 - realSide].textContent = "Colorized by " + round.run;
    choices[realSide].classList.add("real");
    choices[1 - realSide].classList.add("fake");
    choices[side].classList.add("picked");
    choices.forEach(function (c) { c.disabled = true; });
    el("verdict").textContent = correct ? "Right: that one is the original."
        : "Fooled! That one was colorized by " + round.run + ".";
    nextButton.textContent = position + 1 < rounds.length ? "Next pair" : "Play again";
    nextButton.disabled = false;
    nextButton.focus();
    saveTally();
    renderTally();
  }

  function next() {
    position += 1;
    if (position >= rounds.length) newGame(); else showRound();
  }

  choices.forEach(function (c, side) {
    c.addEventListener("click", function () { choose(side); });
  });
  nextButton.addEventListener("click", next);
  el("reset").addEventListener("click", function () {
    tally = emptyTally();
    saveTally();
    renderTally();
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "ArrowLeft") choose(0);
    else if (event.key === "ArrowRight") choose(1);
  });

  renderTally();
  newGame();
})();
