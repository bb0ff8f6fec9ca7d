"Report task (nbs/05d_reports.ipynb): R2Gen loader, metric registry and its error contracts, phantom reports."
import json, os, shutil, importlib.util
import numpy as np, pytest
from a3tune.reports import *
from a3tune.reports import _cos
from a3tune.data import question_answer, read_llava_json

def _ann(tmp_path, d, name='annotation.json'):
    p = tmp_path/name; p.write_text(json.dumps(d)); return p

ENTRY = lambda i, rep, n=2: {'id': f's{i}', 'image_path': [f's{i}/{k}.png' for k in range(n)], 'report': rep}
LONG = 'The heart is normal in size. The lungs are clear.'

def test_r2gen_counts_sample_and_views(tmp_path, capsys):
    p = _ann(tmp_path, {'train': [ENTRY(i, LONG if i % 3 else 'Normal.') for i in range(12)], 'val': [], 'test': [ENTRY(99, LONG, 1)]})
    recs = r2gen_to_llava(p, 'train', n=5, seed=1)
    out = capsys.readouterr().out
    assert 'train: 12 studies, 4 under 5 words dropped, 8 kept, 5 sampled (seed 1) -> 5 records' in out
    assert [r['id'] for r in recs] == [r['id'] for r in r2gen_to_llava(p, 'train', n=5, seed=1, verbose=False)]   # seeded
    assert [r['id'] for r in recs] == sorted([r['id'] for r in recs], key=lambda i: int(i[1:]))                   # file order
    assert len(r2gen_to_llava(p, 'train', views='each', verbose=False)) == 16
    assert question_answer(recs[0]) == (REPORT_PROMPT, LONG)
    ps = prepare_reports(p, tmp_path/'out', n_train=3)
    assert len(read_llava_json(ps['train'])) == 3 and len(read_llava_json(ps['test'])) == 1

def test_findings_impression_joined(tmp_path):
    p = _ann(tmp_path, {'train': [{'id': 1, 'image_path': 'a.jpg', 'findings': ' Lungs clear. ', 'impression': 'No acute process.'}]})
    assert read_r2gen(p)[0] == {'id': '1', 'images': ['a.jpg'], 'report': 'Lungs clear. No acute process.'}

@pytest.mark.parametrize('content,msg', [
    ('{"train": [', 'not a valid R2Gen annotation file'),
    ('{"foo": []}', "object with 'train', 'val' and 'test' lists"),
    ('{"train": [[1]]}', 'train[0] is a list, not an object'),
    ('{"train": [{"report": "x", "image_path": ["a"]}]}', "train[0] has no 'id'"),
    ('{"train": [{"id": "a", "report": "x", "image_path": []}]}', "train[0] (id 'a'): 'image_path'"),
    ('{"train": [{"id": "a", "report": 3, "image_path": ["a"]}]}', "has no 'report' string"),
    ('{"test": []}', "no 'train' list"),
])
def test_r2gen_errors_name_file_and_field(tmp_path, content, msg):
    p = tmp_path/'ann.json'; p.write_text(content)
    with pytest.raises(ValueError, match=None) as e: read_r2gen(p)
    assert msg in str(e.value) and 'ann.json' in str(e.value)

def test_clean_report_is_r2gen():
    assert clean_report('1. Heart is normal.\n2. No effusion!') == 'heart is normal . no effusion .'
    assert n_words('No acute disease.') == 3

P, R = ['The heart is normal.', 'No effusion.'], ['The heart is normal in size.', 'No pleural effusion.']

def test_bleu_hand_computed_and_sacrebleu_agrees():
    b, bp = bleu(P, R), np.exp(1 - 11/8)
    assert b['BLEU-1'] == pytest.approx(100*bp) and b['BLEU-3'] == pytest.approx(100*bp*(4/6*2/4)**(1/3))
    assert b['BLEU-4'] == pytest.approx(100*bp*(4/6*2/4*1/2)**(1/4))
    assert sacre_bleu(P, R)['sacreBLEU'] == pytest.approx(b['BLEU-4'])

def test_rouge_hand_computed():
    assert rouge_l(P, R)['ROUGE-L'] == pytest.approx(80.)
    fb = lambda p, r: 2.44*p*r/(r + 1.44*p)
    assert rouge_l_coco(P, R)['ROUGE-L (coco)'] == pytest.approx(100*(fb(1, 5/7) + fb(1, 3/4))/2)
    assert rouge_l(R, R)['ROUGE-L'] == pytest.approx(100.)

def test_meteor_needs_java(monkeypatch, tmp_path):
    monkeypatch.setenv('PATH', str(tmp_path))
    with pytest.raises(MissingExtra, match="no 'java' is on PATH"): meteor(P, R)

@pytest.mark.skipif(shutil.which('java') is None, reason='no Java runtime')
def test_meteor_runs():
    assert 0 < meteor(P, R)['METEOR'] < 100 and meteor(R, R)['METEOR'] == pytest.approx(100, abs=1)

def test_bertscore_offline_and_missing_model():
    s = bertscore(R, R, bertscore_model='minilm-offline')
    assert list(s) == ['BERTScore (MiniLM, not comparable)'] and s['BERTScore (MiniLM, not comparable)'] == pytest.approx(100, abs=1e-3)
    with pytest.raises(MissingExtra, match='minilm-offline'): bertscore(P, R, bertscore_model='no-such/model', bertscore_layers=2)
    with pytest.raises(ValueError, match='bertscore_layers'): bertscore(P, R, bertscore_model='no-such/model')

class FakeCheXbert:
    def get_label(self, report, mode='rrg'): return [int(w in report.lower()) for w in ('cardiomegaly', 'effusion', 'edema')]

class FakeRadGraph:
    def __call__(self, refs, hyps): r = [float(h == g) for h, g in zip(hyps, refs)]; return float(np.mean(r)), r, None, None

class FakeRaTE:
    def compute_score(self, c, r): return [.25]*len(c)

def test_clinical_plumbing_with_fakes():
    assert chexbert(['effusion', 'edema'], ['effusion and edema', 'cardiomegaly'], chexbert_scorer=FakeCheXbert())['CheXbert'] == pytest.approx(100*(1/np.sqrt(2))/2)
    assert _cos([0, 0], [0, 0]) == 1. and _cos([0, 0], [1, 0]) == 0.
    assert radgraph(['a', 'b'], ['a', 'c'], radgraph_scorer=FakeRadGraph())['RadGraph'] == 50.
    assert ratescore(['a'], ['b'], ratescore_scorer=FakeRaTE())['RaTEScore'] == 25.
    m = report_metrics(P, R, ('bleu', 'chexbert', 'radgraph'), chexbert_scorer=FakeCheXbert(), radgraph_scorer=FakeRadGraph())
    assert list(m)[-2:] == ['CheXbert', 'RadGraph'] and m['RadGraph'] == 0.

@pytest.mark.skipif(importlib.util.find_spec('f1chexbert') is not None, reason='f1chexbert installed')
def test_missing_clinical_package_names_extra():
    with pytest.raises(MissingExtra, match=r"a3tune\[report-clinical\]"): chexbert(P, R)

def test_registry_and_errors():
    assert {'bleu', 'sacrebleu', 'rouge_l', 'rouge_l_coco', 'meteor', 'bertscore', 'chexbert', 'radgraph', 'ratescore'} <= set(REPORT_METRICS)
    @register_report_metric('_len')
    def _len(preds, refs, **opts): return {'len': float(np.mean([len(p) for p in preds]))}
    try: assert report_metrics(['ab', 'abcd'], ['x', 'y'], ('_len',)) == {'len': 3.}
    finally: REPORT_METRICS.pop('_len')
    with pytest.raises(ValueError, match='2 predictions but 1 references'): report_metrics(P, R[:1])
    with pytest.raises(ValueError, match='unknown report metric'): report_metrics(P, R, ('cider',))
    with pytest.raises(ValueError, match='not taken by any'): report_metrics(P, R, ('bleu',), bertscore_model='x')
    with pytest.raises(ValueError, match='no reports'): report_metrics([], [])

def test_phantom_reports_sentences_hinge_on_one_region(tmp_path):
    its = make_phantom_reports(6, seed=2)
    assert [i['answer'] for i in its] == [i['answer'] for i in make_phantom_reports(6, seed=2)]
    for it in its:
        assert len(it['sentences']) == len(it['sentence_gt']) == len({o for o in it['labels'] if '_' not in o})
        for s, g in zip(it['sentences'], it['sentence_gt']):
            assert g[0] in s and all(n.startswith(g[0]) for n in g)          # one organ (and its lesion) per sentence
            assert ('with a lesion' in s) == (f"{g[0]}_lesion" in g)
        assert it['answer'] == ' '.join(it['sentences'])
    r = {'id': 'a', 'image': 'a.png', 'conversations': [{'from': 'human', 'value': '<image>\ndescribe the organs in the image'}, {'from': 'gpt', 'value': its[0]['answer']}]}
    assert report_label_text(r) == ['describe the organs in the image'] and report_label_text(r, 'sentences') == its[0]['sentences']
    with pytest.raises(ValueError, match='use one of'): report_label_text(r, 'x')

def test_cli_eval_task_report_end_to_end(tmp_path, capsys):
    from a3tune.cli import main
    from a3tune.phantom import write_phantom_dataset, PHANTOM_BASE
    data = write_phantom_dataset(make_phantom_reports(3, seed=4), tmp_path/'ph', 'reports.json')
    rc = main(['eval', '--task', 'report', '--model', str(PHANTOM_BASE), '--data', str(data), '--out', str(tmp_path/'ev'),
               '--strategy', 'greedy', '--max-new-tokens', '12', '--metrics', 'bleu,rouge_l', '--n-boot', '10'])
    assert rc == 0
    m = json.loads((tmp_path/'ev'/'metrics.json').read_text())
    assert m['task'] == 'report' and m['n'] == 3 and set(m['metrics']) == {'BLEU-1', 'BLEU-2', 'BLEU-3', 'BLEU-4', 'ROUGE-L'}
    assert all(v['lo'] <= v['value'] <= v['hi'] for v in m['metrics'].values())
    assert len((tmp_path/'ev'/'reports.jsonl').read_text().splitlines()) == 3
    assert main(['eval', '--task', 'nope']) == 2 and "choose one of ['vqa', 'report']" in capsys.readouterr().err
    assert main(['eval', '--task=report', '--model', 'x', '--data', str(data), '--out', str(tmp_path/'e2'), '--metrics', 'cider']) == 2
    assert "unknown report metric(s) ['cider']" in capsys.readouterr().err

def test_phantom_reports_in_base_vocabulary():
    from a3tune.phantom import load_phantom_base
    tok = load_phantom_base()[1].tokenizer
    for it in make_phantom_reports(8):
        assert '<unk>' not in tok.tokenize(it['answer']) + tok.tokenize(it['question'])

def test_phantom_findings_metric():
    it = make_phantom_reports(3, seed=7)[0]
    ref, n = it['answer'], len(it['sentences'])
    assert phantom_findings([ref], [ref])['findings'] == 100.
    assert phantom_findings([ref.replace(', no lesion', ', with a lesion', 1) if 'no lesion' in ref else ref.replace('with a lesion', 'no lesion', 1)], [ref])['findings'] == pytest.approx(100*(n - 1)/n)
    assert phantom_findings(['the liver'], [ref])['findings'] == 0.
    assert 'phantom_findings' in REPORT_METRICS

def _phantom_r2gen(tmp_path, n=4):
    "An R2Gen-shaped annotation file whose reports are phantom reports (the phantom base's words), images as PNGs."
    from a3tune.phantom import phantom_image
    its, ann = make_phantom_reports(n, seed=9), {'train': [], 'val': [], 'test': []}
    for i, it in enumerate(its):
        (tmp_path/'imgs'/f's{i}').mkdir(parents=True)
        for v in range(2): phantom_image(it).save(tmp_path/'imgs'/f's{i}'/f'{v}.png')
        ann['train' if i else 'test'].append({'id': f's{i}', 'image_path': [f's{i}/0.png', f's{i}/1.png'], 'report': it['answer']})
    return _ann(tmp_path, ann), its

def test_labels_and_train_take_report_data_through_the_cli(tmp_path, capsys):
    "R2Gen annotation.json -> prepare_reports -> `a3tune labels --label-text` -> `a3tune train`; the annotation file itself is refused with the fix."
    from a3tune.cli import main
    from a3tune.phantom import PHANTOM_BASE
    from a3tune.weak_labels import read_labels
    from a3tune.data import join_labels, load_data
    ann, its = _phantom_r2gen(tmp_path)
    ps = prepare_reports(ann, tmp_path/'llava', question=PHANTOM_REPORT_PROMPT, verbose=False)
    recs = load_data(ps['train'])[0]
    assert len(recs) == 3 and recs[0]['views'] == ['s1/0.png', 's1/1.png']           # R2Gen fields kept, data unchanged
    lab = ['labels', str(ps['train']), '--images', str(tmp_path/'imgs'), '--segmenter', 'felzenszwalb', '-k', '2', '--no-progress']
    assert main(lab + ['--out', str(tmp_path/'prompt.jsonl')]) == 0
    assert main(lab + ['--out', str(tmp_path/'sent.jsonl'), '--label-text', 'sentences']) == 0
    hp, hs = read_labels(tmp_path/'prompt.jsonl')[0], read_labels(tmp_path/'sent.jsonl')[0]
    assert 'label_text' not in hp['settings'] and hs['settings']['label_text'] == 'sentences'
    assert read_labels(tmp_path/'sent.jsonl')[1]['s1']['texts'] == its[1]['sentences']
    assert len(join_labels(recs, tmp_path/'sent.jsonl', tmp_path/'imgs')) == 3
    capsys.readouterr()
    assert main(lab[:1] + [str(ann)] + lab[2:] + ['--out', str(tmp_path/'x.jsonl')]) == 2
    assert 'is an R2Gen annotation file; convert it with a3tune.reports.prepare_reports' in capsys.readouterr().err
    train = ['train', str(PHANTOM_BASE), '--data', str(ps['train']), '--images', str(tmp_path/'imgs'), '--labels', str(tmp_path/'sent.jsonl'),
             '--out', str(tmp_path/'run')] + [a for kv in ('max_steps=2', 'per_device_batch_size=2', 'R=4', 'k_segments=4', "bf16=false", 'logging_steps=1') for a in ('--set', kv)]
    assert main(train) == 0
    state = json.loads((tmp_path/'run'/'checkpoint-2'/'trainer_state.json').read_text())
    assert [l['labelled_frac'] for l in state['log_history'] if 'loss' in l] == [1.0, 1.0]

def test_report_labels_resume_and_refuse_other_texts(tmp_path):
    "A label file made from one label text is not resumed with another; the texts file resumes."
    from a3tune.phantom import write_phantom_dataset, phantom_segmenter, fit_phantom_scorer
    from a3tune.weak_labels import read_labels, LabelFileError
    pj = write_phantom_dataset(make_phantom_reports(3, seed=1), tmp_path/'ph', 'train.json')
    sc = fit_phantom_scorer(10, steps=20)
    out = report_labels(pj, tmp_path/'l.jsonl', phantom_segmenter(), sc, 2, label_text='report')
    r = read_labels(out)[1]
    assert all(len(x['texts']) == 1 and len(x['segments']) == 2 for x in r.values())
    assert report_labels(pj, tmp_path/'l.jsonl', phantom_segmenter(), sc, 2, label_text='report').read_bytes() == out.read_bytes()   # resumed: same file
    with pytest.raises(LabelFileError, match='other settings'):
        report_labels(pj, tmp_path/'l.jsonl', phantom_segmenter(), sc, 3, label_text='report')   # its texts file has K = 2
