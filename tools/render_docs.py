"""Render the docs site offline: the notebooks in `nbs/` -> static HTML pages with a sidebar, no Quarto needed.

`nbdev_docs` needs Quarto, which cannot be installed on the build machines. This script gives the same pages in the
sidebar's order (index first, then the file-name order nbdev's `sidebar.yml` uses), with every stored figure embedded:

    python tools/render_docs.py                      # nbdev-process all notebooks (show_doc output), write _docs/
    python tools/render_docs.py --no-proc            # render the stored notebooks as they are (seconds)
    python tools/render_docs.py --no-proc --nbs index 04_loss --out /tmp/site

By default the notebooks first go through nbdev's own docs processing (`nbdev.serve.proc_nbs`, into `_proc/`, as
`nbdev_docs` does: exported cells become `show_doc` entries, `#| hide` cells go); `--no-proc` skips that and renders
the stored notebooks, dropping `#| hide` cells and honouring `#| echo: false`. Pages are written by nbconvert's `lab`
template with images embedded as data URIs, so each page is one self-contained file. Open `_docs/index.html`."""
import argparse, html, re, shutil
from pathlib import Path

root = Path(__file__).resolve().parent.parent
NBS = root/'nbs'

def notebooks(nbs=NBS, names=None):
    "The notebooks of the site in sidebar order: `index` first, then file-name order; `names` picks a subset."
    fs = sorted(p for p in Path(nbs).glob('*.ipynb') if not p.name.startswith(('_', '.')))
    fs = sorted(fs, key=lambda p: (p.stem != 'index', p.name))
    if names: fs = [p for p in fs if p.stem in names or p.name in names]
    return fs

def _src(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']

def _dirs(src):
    "The `#|` directives of a cell as {name: value}."
    out = {}
    for l in src.splitlines():
        if not l.startswith('#|'): continue
        k, _, v = l[2:].strip().partition(':') if ':' in l else l[2:].strip().partition(' ')
        out[k.strip()] = v.strip()
    return out

def front_matter(nb):
    "The page's `title`/`description`: nbdev's YAML front matter (a raw cell), else a first `# title` / `> description` cell."
    import yaml
    for c in nb['cells']:
        src = _src(c)
        if c['cell_type'] == 'raw' and src.lstrip().startswith('---'):
            return yaml.safe_load(src.strip().strip('-')) or {}
        if c['cell_type'] == 'markdown' and src.startswith('# '):
            m = re.match(r'# (.+)\n(?:\s*> (.+))?', src)
            return {'title': m.group(1).strip(), 'description': (m.group(2) or '').strip(), 'in_page': True}
    return {}

def quarto_md(md):
    "Markdown without Quarto-only syntax: link attributes `[x](u){...}` and `:::` fences."
    md = re.sub(r'\]\(([^)\s]*)\)\{[^}\n]*\}', r'](\1)', md)
    return '\n'.join(l for l in md.splitlines() if not l.lstrip().startswith(':::'))

def filter_nb(nb):
    "Drop `#| hide` cells, hide the input of `#| echo: false` cells, strip directive lines."
    cells = []
    for c in nb['cells']:
        src = _src(c)
        if c['cell_type'] == 'raw' and src.lstrip().startswith('---'): continue   # Quarto front matter
        if c['cell_type'] == 'markdown': cells.append(dict(c, source=quarto_md(src))); continue
        if c['cell_type'] != 'code': cells.append(c); continue
        d = _dirs(src)
        if 'hide' in d or 'default_exp' in d or d.get('include', '').lower() == 'false': continue
        c = dict(c, source='\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip('\n'))
        if d.get('echo', '').lower() == 'false': c['metadata'] = dict(c.get('metadata', {}), transient={'remove_source': True})
        if d.get('fig-alt'): c['metadata'] = dict(c.get('metadata', {}), alt=d['fig-alt'])   # nbconvert writes it as the figure's <img alt>
        if not c['source'] and not c.get('outputs'): continue
        for o in c.get('outputs', []):
            if 'text/markdown' in o.get('data', {}): o['data']['text/markdown'] = quarto_md(_src({'source': o['data']['text/markdown']}))
        cells.append(c)
    fm = front_matter(nb)
    if fm.get('title') and not fm.get('in_page'):   # nbdev moved the `# title` into front matter: show it on the page
        cells.insert(0, {'cell_type': 'markdown', 'metadata': {}, 'source': f"# {fm['title']}\n\n> {fm.get('description', '')}"})
    return dict(nb, cells=cells)

CSS = """<style>
body { margin-left: 17rem !important; }
nav.a3-sidebar { position: fixed; top: 0; left: 0; bottom: 0; width: 15.5rem; overflow-y: auto; padding: 1rem;
  background: #f7f7f9; border-right: 1px solid #ddd; font: 14px/1.5 system-ui, sans-serif; z-index: 10; }
nav.a3-sidebar h2 { font-size: 1.2rem; margin: 0 0 .8rem; } nav.a3-sidebar h2 a { color: #2780e3; text-decoration: none; }
nav.a3-sidebar ol { list-style: none; padding: 0; margin: 0; }
nav.a3-sidebar li a { display: block; padding: .2rem .5rem; color: #333; text-decoration: none; border-radius: 4px; }
nav.a3-sidebar li a:hover { background: #e9ecef; } nav.a3-sidebar li a.active { background: #2780e3; color: #fff; }
.a3-pager { display: flex; justify-content: space-between; margin: 2rem 1rem; font: 14px system-ui, sans-serif; }
</style>"""

def sidebar(pages, current, site_title):
    "The sidebar `<nav>`: one link per page, the current one marked."
    items = '\n'.join(f'<li><a href="{p}.html"{" class=active" if p == current else ""}>{html.escape(t)}</a></li>'
                      for p, t in pages)
    return f'<nav class="a3-sidebar" aria-label="notebooks"><h2><a href="index.html">{html.escape(site_title)}</a></h2><ol>\n{items}\n</ol></nav>'

def pager(pages, current):
    "Previous / next links in sidebar order."
    names = [p for p, _ in pages]; i = names.index(current)
    prev = f'<a href="{pages[i-1][0]}.html">← {html.escape(pages[i-1][1])}</a>' if i else '<span></span>'
    nxt = f'<a href="{pages[i+1][0]}.html">{html.escape(pages[i+1][1])} →</a>' if i + 1 < len(pages) else '<span></span>'
    return f'<div class="a3-pager">{prev}{nxt}</div>'

def add_alts(body:str, nb:dict)->str:
    "Give each output figure of the page the `alt` text of its cell's `#| fig-alt` (the lab template writes none)."
    alts = iter([c.get('metadata', {}).get('alt') for c in nb['cells'] if c['cell_type'] == 'code'
                 for o in c.get('outputs', []) if any(k.startswith('image/') for k in o.get('data', {}))])
    def one(m):
        a = next(alts, None)
        if not a: return m.group(0)
        img = re.sub(r'\salt="[^"]*"', '', m.group(2))   # nbconvert's "No description has been provided for this image"
        return m.group(1) + img.replace('<img', f'<img alt="{html.escape(a)}"', 1)
    return re.sub(r'(<div class="jp-RenderedImage jp-OutputArea-output[^"]*"[^>]*>\s*)(<img[^>]*>)', one, body)

def render(out=root/'_docs', names=None, proc=True, site_title='a3tune'):
    "Render the site into `out`; returns the written HTML paths in sidebar order."
    import nbformat
    from nbconvert import HTMLExporter
    src_dir = NBS
    if proc:
        from nbdev.serve import proc_nbs
        src_dir = Path(proc_nbs(n_workers=1))
    srcs = notebooks(NBS, names)
    nbs = {p.stem: nbformat.reads(((src_dir/p.name) if (src_dir/p.name).exists() else p).read_text(encoding='utf-8'), as_version=4)
           for p in srcs}
    pages = [(s, front_matter(nb).get('title') or s) for s, nb in nbs.items()]
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    ex = HTMLExporter(template_name='lab', embed_images=True, exclude_input_prompt=True, exclude_output_prompt=True)
    written = []
    for stem, nb in nbs.items():
        node = nbformat.from_dict(filter_nb(nb))
        body, _ = ex.from_notebook_node(node, resources={'metadata': {'path': str(NBS), 'name': stem}})
        body = add_alts(body, node)
        body = re.sub(r'<title>.*?</title>', f'<title>{html.escape(dict(pages)[stem])} – {site_title}</title>', body, count=1, flags=re.S)
        body = body.replace('</head>', CSS + '\n</head>', 1)
        body = re.sub(r'(<body[^>]*>)', lambda m: m.group(1) + '\n' + sidebar(pages, stem, site_title), body, count=1)
        body = body.replace('</body>', pager(pages, stem) + '\n</body>', 1)
        (out/f'{stem}.html').write_text(body, encoding='utf-8'); written.append(out/f'{stem}.html')
    if (NBS/'styles.css').exists(): shutil.copy(NBS/'styles.css', out/'styles.css')
    return written

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(root/'_docs'), help='output folder (default: _docs/, git-ignored)')
    ap.add_argument('--nbs', nargs='*', help='render only these notebooks (stems, e.g. index 04_loss)')
    ap.add_argument('--no-proc', action='store_true', help="skip nbdev's docs processing; render the stored notebooks")
    a = ap.parse_args()
    ws = render(a.out, a.nbs, proc=not a.no_proc)
    print(f'wrote {len(ws)} pages to {Path(a.out)}; open {Path(a.out)/"index.html"}')
