<?php
/* phpMyAdmin on the reporting replica */
$cfg['blowfish_secret'] = '';

$i = 0;
$i++;
$cfg['Servers'][$i]['auth_type'] = 'config';
$cfg['Servers'][$i]['host'] = 'mysql-replica.internal';
$cfg['Servers'][$i]['user'] = 'pma_ro';
$cfg['Servers'][$i]['password'] = '@@R:Ru:A62:18@@';
$cfg['Servers'][$i]['controlpass'] = '@@R:c4:A62:16@@';
$cfg['Servers'][$i]['AllowNoPassword'] = false;
