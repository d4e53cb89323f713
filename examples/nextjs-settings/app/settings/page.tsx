// /settings: reads the configuration on the server at request time and renders the page.
import { readConfig } from '../../lib/config';
import { SettingsView } from './settings-view';

export const dynamic = 'force-dynamic';

export default function SettingsPage() {
  return <SettingsView config={readConfig()} />;
}
