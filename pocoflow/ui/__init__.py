"""The Streamlit monitor of recorded runs (``pip install "pocoflow[ui]"``).

``streamlit run pocoflow/ui/monitor.py -- pocoflow.db``, or
``render_workflow_monitor(db)`` in any Streamlit page (see :mod:`pocoflow.ui.monitor`);
:func:`pocoflow.ui.server.serve_monitor` starts it as a server. Importing this
package loads neither streamlit nor the database.
"""
