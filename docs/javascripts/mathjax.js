// MathJax settings for pymdownx.arithmatex (generic mode): \( ... \) inline, \[ ... \] display.
// This file runs before MathJax itself (assets/mathjax/tex-chtml.js, shipped with the site).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// Typeset again whenever the theme swaps in a new page's content (instant navigation).
// The first page needs nothing: MathJax typesets it as it starts. Until MathJax has loaded
// and started, window.MathJax is the settings object above, with no startup; a page whose
// MathJax failed to load keeps its TeX as text rather than throwing.
if (typeof document$ !== "undefined") {
  let firstPage = true;
  document$.subscribe(() => {
    const startup = window.MathJax && window.MathJax.startup;
    if (firstPage || !startup || !startup.promise) {
      firstPage = false;
      return;
    }
    startup.promise
      .then(() => {
        startup.output.clearCache();
        MathJax.typesetClear();
        MathJax.texReset();
        return MathJax.typesetPromise();
      })
      .catch((error) => console.warn("MathJax could not typeset the page:", error));
  });
}
