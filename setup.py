# All settings are in settings.ini; edit there, not here.
from configparser import ConfigParser
from pathlib import Path
import setuptools, shlex

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

expected = ('version description keywords author author_email lib_name user branch license status '
            'min_python audience language').split()
missing = [o for o in expected if o not in cfg]
if missing: raise SystemExit(f"settings.ini is missing: {missing}")
setup_cfg = {o: cfg[o] for o in 'version description keywords author author_email'.split()}

# SPDX licence expressions: setuptools >= 77 deprecates `License ::` classifiers in their favour (PEP 639)
licenses = {'apache2': 'Apache-2.0', 'mit': 'MIT'}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable',
            '6 - Mature', '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13 3.14'.split()

requirements = shlex.split(cfg.get('requirements', ''))
dev_requirements = shlex.split(cfg.get('dev_requirements', ''))
report_requirements = shlex.split(cfg.get('report_requirements', ''))
report_clinical = shlex.split(cfg.get('report_clinical_requirements', ''))
min_python = cfg['min_python']
lic = licenses.get(cfg['license'].lower(), cfg['license'])
readme = Path('README.md')
lib_path = cfg['lib_path']

setuptools.setup(
    name=cfg['lib_name'],
    license=lic,
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title()]
                + ['Programming Language :: Python :: ' + o for o in py_versions[py_versions.index(min_python):]],
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=[lib_path, lib_path + '.*']),
    include_package_data=True,
    package_data={lib_path: ['assets/*', 'assets/**/*']},
    install_requires=requirements,
    extras_require={'dev': dev_requirements + report_requirements, 'report': report_requirements,
                    'report-clinical': report_requirements + report_clinical},
    dependency_links=cfg.get('dep_links', '').split(),
    python_requires='>=' + min_python,
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else cfg['description'],
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(),
                  'nbdev': [f'{lib_path}={lib_path}._modidx:d']},
    **setup_cfg)
